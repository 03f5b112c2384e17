rule run_config:
    """The biofa run config of one run, checked against biofa's run schema.

    Python inside snakemake itself, which imports biofa anyway (the Snakefile does), so
    this rule needs no software environment of its own."""
    output:
        f"{RESULTS}/configs/{RUN_FOLDER}.yaml",
    log:
        f"{RESULTS}/logs/run_config/{RUN_FOLDER}.log",
    localrule: True
    params:
        config=run_config,
    run:
        from biofa.study.config import validate as validate_run
        from biofa.study.io import write_yaml

        write_yaml(output[0], validate_run(params.config))


rule train:
    """Train one run; a rerun after an interruption resumes from the run's last checkpoint.

    A stop signal (SIGTERM, which SLURM sends at the time limit, on preemption and on
    scancel) makes biofa write a mid-epoch checkpoint and exit with status 75; the
    profile's retries then run the job again and it resumes there."""
    input:
        config=rules.run_config.output[0],
        data=f"{DATA_ROOT}/{{dataset}}/READY",
    output:
        best=f"{RUN}/{RunFolder.BEST}",
        metrics=f"{RUN}/{RunFolder.METRICS}",
        alignment=f"{RUN}/{RunFolder.ALIGNMENT}",
        status=f"{RUN}/{RunFolder.STATUS}",
    log:
        f"{RESULTS}/logs/train/{RUN_FOLDER}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{RUN_FOLDER}.tsv"
    conda:
        "../envs/biofa.yaml"
    threads: resource(experiment_of, "threads", 1)
    resources:
        gpu=resource(experiment_of, "gpu", 0),
        mem_mb=resource(experiment_of, "mem_mb", 4000),
        runtime=resource(experiment_of, "runtime", 60),
    params:
        dir=run_dir,
    shell:
        "biofa train {input.config} --out {params.dir} --restart-on-change > {log} 2>&1"


rule evaluate:
    """Test top-1 error of the best-validation weights."""
    input:
        best=rules.train.output.best,
        status=rules.train.output.status,
    output:
        f"{RUN}/{RunFolder.evaluation('test')}",
    log:
        f"{RESULTS}/logs/evaluate/{RUN_FOLDER}.log",
    conda:
        "../envs/biofa.yaml"
    resources:
        gpu=resource(experiment_of, "gpu", 0),
    params:
        dir=run_dir,
        device=config["device"],
    shell:
        "biofa evaluate {params.dir} --device {params.device} > {log} 2>&1"
