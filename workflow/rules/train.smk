rule run_config:
    """The biofa run config of one run, checked against biofa's run schema."""
    output:
        f"{RESULTS}/configs/{KEYS}.yaml",
    params:
        config=run_config,
    conda:
        "../envs/biofa.yaml"
    log:
        f"{RESULTS}/logs/run_config/{KEYS}.log",
    localrule: True
    run:
        from biofa.study.config import validate as validate_run
        from biofa.study.io import write_yaml

        write_yaml(output[0], validate_run(params.config))


rule train:
    """Train one run; a rerun after an interruption resumes from the run's last.pt."""
    input:
        config=rules.run_config.output[0],
        data=f"{DATA_ROOT}/{{dataset}}/READY",
    output:
        best=f"{RUN}/best.pt",
        metrics=f"{RUN}/metrics.csv",
        alignment=f"{RUN}/alignment.csv",
        status=f"{RUN}/status.json",
    params:
        dir=run_dir,
    conda:
        "../envs/biofa.yaml"
    log:
        f"{RESULTS}/logs/train/{KEYS}.log",
    threads: resource(experiment_of, "threads", 1)
    resources:
        gpu=resource(experiment_of, "gpu", 0),
        mem_mb=resource(experiment_of, "mem_mb", 4000),
        runtime=resource(experiment_of, "runtime", 60),
    shell:
        "biofa train {input.config} --out {params.dir} --restart-on-change > {log} 2>&1"


rule evaluate:
    """Test top-1 error of the best-validation weights."""
    input:
        best=rules.train.output.best,
        status=rules.train.output.status,
    output:
        f"{RUN}/test.json",
    params:
        dir=run_dir,
        device=config["device"],
    conda:
        "../envs/biofa.yaml"
    log:
        f"{RESULTS}/logs/evaluate/{KEYS}.log",
    resources:
        gpu=resource(experiment_of, "gpu", 0),
    shell:
        "biofa evaluate {params.dir} --device {params.device} > {log} 2>&1"
