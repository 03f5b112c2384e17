rule collect_runs:
    """Test errors, training curves and alignment of every run, one table each (light
    rules like this one run where snakemake runs, not as cluster jobs)."""
    input:
        tests=run_file(RunFolder.evaluation("test")),
    output:
        # accuracy, training, alignment: what biofa report collect writes
        **{name: table(name) for name in RUN_TABLES},
    log:
        f"{RESULTS}/logs/report/collect_runs.log",
    localrule: True
    conda:
        "../envs/biofa.yaml"
    params:
        runs=run_dirs(),
        out=lambda wildcards, output: os.path.dirname(output.accuracy),
    shell:
        "biofa report collect --runs {params.runs} --out-dir {params.out} > {log} 2>&1"


rule collect_attacks:
    """Every attack result in one long table."""
    input:
        attack_csvs(),
    output:
        report(
            table(ATTACK_TABLE),
            caption="../report/robustness_table.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/report/collect_attacks.log",
    localrule: True
    conda:
        "../envs/biofa.yaml"
    shell:
        "biofa report attacks --csv {input} --out {output} > {log} 2>&1"


rule error_table:
    """Top-1 error laid out like the paper's tables: reproduced mean +- std (published)."""
    input:
        accuracy=rules.collect_runs.output.accuracy,
        reference=PUBLISHED["paper_results"],
    output:
        csv=report(
            f"{TABLES}/error_table.csv",
            caption="../report/error_table.rst",
            category="Tables",
        ),
        md=f"{TABLES}/error_table.md",
        tex=f"{TABLES}/error_table.tex",
    log:
        f"{RESULTS}/logs/report/error_table.log",
    localrule: True
    conda:
        "../envs/biofa.yaml"
    params:
        prefix=lambda wildcards, output: os.path.splitext(output.csv)[0],
    shell:
        "biofa report table --accuracy {input.accuracy} --reference {input.reference} "
        "--prefix {params.prefix} > {log} 2>&1"


rule init_table:
    """Top-1 error of each setting trained from several inits, by init and method."""
    input:
        accuracy=rules.collect_runs.output.accuracy,
    output:
        csv=report(
            f"{TABLES}/init_table.csv",
            caption="../report/init_table.rst",
            category="Tables",
        ),
        md=f"{TABLES}/init_table.md",
        tex=f"{TABLES}/init_table.tex",
    log:
        f"{RESULTS}/logs/report/init_table.log",
    localrule: True
    conda:
        "../envs/biofa.yaml"
    params:
        prefix=lambda wildcards, output: os.path.splitext(output.csv)[0],
    shell:
        "biofa report init-table --accuracy {input.accuracy} --prefix {params.prefix} "
        "> {log} 2>&1"


rule figure:
    """One figure from the collected tables, as PNG (in the report) and vector PDF."""
    input:
        table=figure_table,
        reference=figure_reference,
    output:
        png=report(
            f"{FIGURE}.png",
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{figure}",
        ),
        pdf=f"{FIGURE}.pdf",
    log:
        f"{RESULTS}/logs/report/figure_{{figure}}.log",
    localrule: True
    conda:
        "../envs/biofa.yaml"
    params:
        reference=lambda wildcards, input: (
            f"--reference {input.reference}" if input.reference else ""
        ),
    shell:
        # one drawing, both files: biofa writes the PDF beside the PNG it is given
        "biofa report figure {wildcards.figure} --input {input.table} --out {output.png} "
        "{params.reference} > {log} 2>&1"
