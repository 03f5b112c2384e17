"""The workflow as a Snakemake module of another repository.

A second folder, outside this checkout, holds only its own Snakefile (``module biofa:
snakefile: <this checkout>/workflow/Snakefile``, ``use rule * from biofa``) and its own
small config. A dry run there must plan the study, and every file the workflow brings
along (schema, software environment, report pages, the published numbers) must be found
next to the module's Snakefile, not in the consumer's working directory. Nothing trains.
"""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from biofa.study import names

ROOT = Path(__file__).resolve().parents[1]

CONSUMER_SNAKEFILE = """\
configfile: "config/config.yaml"


module biofa:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from biofa
"""


def snakemake(cwd, *args):
    return subprocess.run(["snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def job_counts(output: str) -> dict:
    table = output[output.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def make_consumer(folder: Path) -> Path:
    """Another repository's folder: its Snakefile and a tiny study, two methods, one seed."""
    (folder / "Snakefile").write_text(
        CONSUMER_SNAKEFILE.format(snakefile=ROOT / "workflow" / "Snakefile"))
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    experiment = config["experiments"][0]
    experiment.update(methods=["bp", "fa"], seeds=[0], epochs=1, schedule={"name": "constant"})
    experiment["optimizers"]["sgd"]["lr"] = {"default": 0.01, "fa": 0.001}
    experiment["optimizers"] = {"sgd": experiment["optimizers"]["sgd"]}  # SGD alone
    config["results"] = "study"
    config["attacks"]["n_images"] = 60
    (folder / "config").mkdir()
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    assert not (folder / "workflow").exists() and not (folder / "config" / "reference").exists()
    return folder


@pytest.fixture(scope="module")
def consumer(tmp_path_factory):
    return make_consumer(tmp_path_factory.mktemp("consumer"))


def test_dry_run_from_another_repository_plans_the_study(consumer):
    result = snakemake(consumer, "-n", "-p")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # bp and fa, seed 0: pgd x 2 gradients, square and transfer (onepixel is off) each
    assert counts["train"] == 2 and counts["run_config"] == 2 and "evaluate" not in counts
    assert counts["attack"] == 2 and counts["data"] == 1  # a job per run, four attacks each
    # every figure the study has data for (no onepixel, one init)
    figures = names.study_figures(["bp", "fa"], ["pgd", "square", "transfer"])
    assert "onepixel" not in figures and "initialization" not in figures
    assert len(figures) == len(names.FIGURE_NAMES) - 2
    assert counts["figure"] == len(figures) and counts["error_table"] == 1
    # the outputs go where the consumer's config says, in the consumer's folder
    assert "study/runs/digits/lenet_mnist/sgd/xavier/fa/seed0/best.pt" in result.stdout
    assert str(ROOT) not in "".join(re.findall(r"output: (.*)", result.stdout))


def test_the_published_numbers_come_from_the_module(consumer):
    """The report rules' reference CSVs are the module's, though the consumer has none."""
    result = snakemake(consumer, "-n", "study/figures/robustness.png",
                       "study/tables/error_table.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    inputs = " ".join(re.findall(r"input: (.*)", result.stdout))
    for name in ("paper_results", "paper_robustness"):
        [path] = re.findall(rf"(\S*{name}\.csv)", inputs)
        assert Path(path).resolve() == ROOT / "config" / "reference" / f"{name}.csv"


def test_the_software_environment_comes_from_the_module(consumer):
    """Every rule's conda environment is the module's env file (read and hashed here; the
    environment is not built)."""
    result = snakemake(consumer, "--containerize")
    hashed = re.findall(r"Hashing conda environment (\S+)\.$", result.stdout + result.stderr, re.M)
    assert hashed, result.stdout[-3000:] + result.stderr[-3000:]
    assert {(consumer / path).resolve() for path in hashed} == \
        {ROOT / "workflow" / "envs" / "biofa.yaml"}


def test_report_uses_the_module_pages(tmp_path):
    """The workflow's description and captions reach a report built in the consumer's folder
    (from placeholder result files: only the report's pages are checked here)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    consumer = make_consumer(tmp_path)
    results = consumer / "study"
    (results / "tables").mkdir(parents=True)
    (results / "figures").mkdir()
    for table in (names.ATTACK_TABLE, "error_table"):
        (results / "tables" / f"{table}.csv").write_text("a,b\n1,2\n")
    for figure in names.FIGURE_NAMES:
        plt.imsave(results / "figures" / f"{figure}.png", [[0.0, 1.0], [1.0, 0.0]])
        (results / "figures" / f"{figure}.pdf").write_bytes(b"%PDF-1.4 placeholder")
    result = snakemake(consumer, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (consumer / "report.html").read_text(errors="ignore")
    assert "Feedback alignment without weight transport, reproduced" in html  # workflow.rst
    assert "Every attack result in one long table" in html  # a table's caption
    assert "Top-1 test error (%) of every method" in html
