rule attack:
    """Clean and robust accuracy of one run under one attack and one threat model."""
    input:
        best=rules.train.output.best,
        source=transfer_source,
    output:
        ATTACK_CSV,
    log:
        f"{RESULTS}/logs/attack/{RUN_FOLDER}/{{attack}}-{{gradient}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/attack/{RUN_FOLDER}/{{attack}}-{{gradient}}.tsv"
    conda:
        "../envs/biofa.yaml"
    threads: resource(attack_section, "threads", 1)
    resources:
        gpu=resource(attack_section, "gpu", 0),
        mem_mb=resource(attack_section, "mem_mb", 4000),
        runtime=resource(attack_section, "runtime", 60),
    params:
        dir=lambda wildcards, input: os.path.dirname(input.best),
        arguments=attack_arguments,
        n=config["attacks"]["n_images"],
        batch=config["attacks"]["batch_size"],
        seed=config["attacks"]["seed"],
        device=config["device"],
    shell:
        "biofa attack {params.dir} --attack {wildcards.attack} {params.arguments} "
        "--n {params.n} --batch-size {params.batch} --seed {params.seed} "
        "--device {params.device} --out {output} > {log} 2>&1"
