rule native:
    """biofa's compiled feedback operators, built once for the jobs' torch, in the first job
    (its priority); where they cannot be built, the marker says the Python functions run.

    No job waits for it: a train or attack job that starts while it builds runs the
    Python functions (BIOFA_NATIVE=ready; the same numbers), so on a fresh machine the
    build costs one core for half a minute instead of stalling every core."""
    output:
        f"{RESULTS}/native.txt",
    log:
        f"{RESULTS}/logs/native.log",
    priority: 100
    localrule: True
    conda:
        "../envs/biofa.yaml"
    shell:
        "(biofa native > {output}.tmp && mv {output}.tmp {output}) 2> {log}"


rule run_config:
    """The biofa run config of one run, checked against biofa's run schema when the DAG is
    built (params), so this job is a shell write and starts no Python."""
    output:
        f"{RESULTS}/configs/{RUN_FOLDER}.yaml",
    log:
        f"{RESULTS}/logs/run_config/{RUN_FOLDER}.log",
    localrule: True
    conda:
        "../envs/biofa.yaml"
    params:
        text=run_config_yaml,
    shell:
        "(printf '%s' {params.text:q} > {output}.tmp && mv {output}.tmp {output}) > {log} 2>&1"


rule train:
    """Train one run and test its best-validation weights; a rerun after an interruption
    resumes from the run's last checkpoint. One process (most of a small job is starting
    Python and torch), or as the experiment's resources ask: `processes` (default: one
    per GPU) under torchrun, `nodes` > 1 with one torchrun per node started by srun.

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
        test=f"{RUN}/{RunFolder.evaluation('test')}",
    log:
        f"{RESULTS}/logs/train/{RUN_FOLDER}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{RUN_FOLDER}.tsv"
    conda:
        "../envs/biofa.yaml"
    threads: resource(experiment_of, "threads", 1)
    resources:
        gpu=train_gpus,
        nodes=resource(experiment_of, "nodes", 1),
        mem_mb=resource(experiment_of, "mem_mb", 4000),
        runtime=resource(experiment_of, "runtime", 60),
    params:
        dir=run_dir,
        launch=train_launcher,
    shell:
        # BIOFA_NATIVE=ready: a job does not wait while another builds the compiled backward
        "BIOFA_NATIVE=${{BIOFA_NATIVE:-ready}} {params.launch} biofa train {input.config} --out {params.dir} --restart-on-change --evaluate test "
        "> {log} 2>&1"
