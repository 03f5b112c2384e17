rule attack:
    """Clean and robust accuracy of one run under one attack and one threat model."""
    input:
        best=rules.train.output.best,
        source=transfer_source,
    output:
        ATTACK_CSV,
    params:
        dir=lambda wildcards, input: os.path.dirname(input.best),
        arguments=attack_arguments,
        n=config["attacks"]["n_images"],
        batch=config["attacks"]["batch_size"],
        seed=config["attacks"]["seed"],
        device=config["device"],
    conda:
        "../envs/biofa.yaml"
    log:
        f"{RESULTS}/logs/attack/{KEYS}/{{attack}}-{{gradient}}.log",
    threads: resource(attack_section, "threads", 1)
    resources:
        gpu=resource(attack_section, "gpu", 0),
        mem_mb=resource(attack_section, "mem_mb", 4000),
        runtime=resource(attack_section, "runtime", 60),
    shell:
        "biofa attack {params.dir} --attack {wildcards.attack} {params.arguments} "
        "--n {params.n} --batch-size {params.batch} --seed {params.seed} "
        "--device {params.device} --out {output} > {log} 2>&1"
