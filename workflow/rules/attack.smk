rule attack_plan:
    """The study's attacks section, as biofa attack --plan reads it (a shell write)."""
    output:
        f"{RESULTS}/configs/attacks.yaml",
    log:
        f"{RESULTS}/logs/attack_plan.log",
    localrule: True
    conda:
        "../envs/biofa.yaml"
    params:
        text=attack_plan_yaml,
    shell:
        "(printf '%s' {params.text:q} > {output}.tmp && mv {output}.tmp {output}) > {log} 2>&1"


rule attack:
    """Clean and robust accuracy of one run under every attack and threat model of the
    study: one job per run, the model loaded once for all of them."""
    input:
        best=rules.train.output.best,
        plan=rules.attack_plan.output[0],
        source=transfer_source,
    output:
        run_attack_csvs(),
    log:
        f"{RESULTS}/logs/attack/{RUN_FOLDER}.log",
    benchmark:
        f"{RESULTS}/benchmarks/attack/{RUN_FOLDER}.tsv"
    conda:
        "../envs/biofa.yaml"
    threads: resource(attack_section, "threads", 1)
    resources:
        gpu=resource(attack_section, "gpu", 0),
        mem_mb=resource(attack_section, "mem_mb", 4000),
        runtime=resource(attack_section, "runtime", 60),
    params:
        dir=lambda wildcards, input: os.path.dirname(input.best),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        source=source_option,
        device=config["device"],
    shell:
        "BIOFA_NATIVE=${{BIOFA_NATIVE:-ready}} biofa attack {params.dir} --plan {input.plan} --out-dir {params.out} {params.source} "
        "--device {params.device} --threads {threads} > {log} 2>&1"
