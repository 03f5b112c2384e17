rule data:
    """One job per data set: download through torchvision (or check the files are there).

    Runs where snakemake runs: cluster compute nodes often have no internet access."""
    output:
        f"{DATA_ROOT}/{{dataset}}/READY",
    log:
        f"{RESULTS}/logs/data/{{dataset}}.log",
    localrule: True
    conda:
        "../envs/biofa.yaml"
    params:
        root=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
    shell:
        "biofa data {wildcards.dataset} --root {params.root} > {log} 2>&1"
