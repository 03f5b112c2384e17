rule data:
    """One job per data set: download through torchvision (or check the files are there;
    in a smoke run, write a stand-in in the data set's real format).

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
        # a smoke run (config: smoke=true) writes stand-in data in the real file formats
        stand_in="--stand-in" if config["smoke"] else "",
    shell:
        "biofa data {wildcards.dataset} --root {params.root} {params.stand_in} > {log} 2>&1"
