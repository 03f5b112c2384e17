FIGURES = {
    "training": "training",
    "alignment": "alignment",
    "alignment_layers": "alignment",
    "robustness": "robustness",
    "onepixel": "robustness",
    "transfer": "robustness",
}


rule collect_runs:
    """Test errors, training curves and alignment of every run, one table each (light
    rules like this one run where snakemake runs, not as cluster jobs)."""
    input:
        tests=expand(f"{RUN}/test.json", zip, **{k: [r[k] for r in runs()] for k in
                     ("dataset", "model", "optimizer", "method", "seed")}),
    output:
        accuracy=f"{RESULTS}/tables/accuracy.csv",
        training=f"{RESULTS}/tables/training.csv",
        alignment=f"{RESULTS}/tables/alignment.csv",
    params:
        runs=run_dirs(),
        out=lambda wildcards, output: os.path.dirname(output.accuracy),
    conda:
        "../envs/biofa.yaml"
    localrule: True
    log:
        f"{RESULTS}/logs/report/collect_runs.log",
    shell:
        "biofa report collect --runs {params.runs} --out-dir {params.out} > {log} 2>&1"


rule collect_attacks:
    """Every attack result in one long table."""
    input:
        attack_csvs(),
    output:
        f"{RESULTS}/tables/robustness.csv",
    conda:
        "../envs/biofa.yaml"
    localrule: True
    log:
        f"{RESULTS}/logs/report/collect_attacks.log",
    shell:
        "biofa report attacks --csv {input} --out {output} > {log} 2>&1"


rule error_table:
    """Top-1 error laid out like the paper's tables: reproduced mean +- std (published)."""
    input:
        accuracy=rules.collect_runs.output.accuracy,
        reference="config/reference/paper_results.csv",
    output:
        csv=report(f"{RESULTS}/tables/error_table.csv", caption="../report/error_table.rst",
                   category="Tables"),
        md=f"{RESULTS}/tables/error_table.md",
        tex=f"{RESULTS}/tables/error_table.tex",
    params:
        prefix=lambda wildcards, output: os.path.splitext(output.csv)[0],
    conda:
        "../envs/biofa.yaml"
    localrule: True
    log:
        f"{RESULTS}/logs/report/error_table.log",
    shell:
        "biofa report table --accuracy {input.accuracy} --reference {input.reference} "
        "--prefix {params.prefix} > {log} 2>&1"


PUBLISHED_ROBUSTNESS = "config/reference/paper_robustness.csv"


rule figure:
    """One figure from the collected tables (robustness: the published numbers as stars)."""
    input:
        table=lambda wildcards: f"{RESULTS}/tables/{FIGURES[wildcards.figure]}.csv",
        reference=PUBLISHED_ROBUSTNESS,
    output:
        report(f"{RESULTS}/figures/{{figure}}.png", caption="../report/figures.rst",
               category="Figures", subcategory="{figure}"),
    params:
        reference=lambda wildcards, input: (f"--reference {input.reference}"
                                            if wildcards.figure in ("robustness", "onepixel") else ""),
    wildcard_constraints:
        figure="|".join(FIGURES),
    conda:
        "../envs/biofa.yaml"
    localrule: True
    log:
        f"{RESULTS}/logs/report/figure_{{figure}}.log",
    shell:
        "biofa report figure {wildcards.figure} --input {input.table} --out {output} "
        "{params.reference} > {log} 2>&1"
