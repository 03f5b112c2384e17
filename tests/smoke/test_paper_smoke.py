"""The smoke run of the paper's study: its whole DAG, on stand-in data, in minutes.

``snakemake --cores 2 --configfile config/paper.yaml --config smoke=true`` runs every job
that the full study has (every data set through ``biofa data`` and its real loader, every
run of every experiment with its model at full size, every attack, table, figure and the
report), one epoch on stand-in files in each data set's real format and a couple of
attacked images. This test runs it in a copy of the workflow and checks that the DAG is
the full study's, job for job, and that every output exists and holds what it should.
``.ci/run`` runs it on its own (``pytest -m smoke``), like the cluster test.
"""

import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from biofa.study import study_config
from biofa.study.names import FIGURE_FORMATS, FIGURE_NAMES, study_figures
from snakemake_runs import job_counts, snakemake

pytestmark = pytest.mark.smoke

ROOT = Path(__file__).resolve().parents[2]
#: The issue's budget on 2 CPU cores; the run is stopped at 1.5 times it.
BUDGET_S = 20 * 60
#: Disk the run needs: its checkpoints, most of it the ImageNet DFA run's two (8.8 GB each).
DISK_NEEDED = 20e9
PAPER = ["--configfile", "config/paper.yaml"]
SMOKE = [*PAPER, "--config", "smoke=true"]
#: a failed job's log goes into the output (and so into the assertion message)
SHOW_FAILED = ["--show-failed-logs"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A project holding the workflow and configs, after one smoke run: (folder, output,
    wall seconds, the dry run's job counts of the full study)."""
    project = tmp_path_factory.mktemp("paper-smoke")
    free = shutil.disk_usage(project).free
    if free < DISK_NEEDED:
        pytest.fail(f"the smoke run writes about {DISK_NEEDED / 1e9:.0f} GB (DFA's fixed "
                    f"feedback matrices for ResNet-18 at 224 px are 8.7 GB, in best.pt and "
                    f"last.pt) and {project} has {free / 1e9:.1f} GB free: free some space")
    for name in ("workflow", "config"):
        shutil.copytree(ROOT / name, project / name)
    full = snakemake(project, "-n", *PAPER, timeout=600)
    assert full.returncode == 0, full.stdout[-4000:]
    start = time.perf_counter()
    run = snakemake(project, "--cores", "2", *SMOKE, *SHOW_FAILED, timeout=1.5 * BUDGET_S)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, failed_jobs(run.stdout)
    return project, run.stdout, seconds, job_counts(full.stdout)


def failed_jobs(output: str) -> str:
    """What snakemake printed about each failed job (its log included), else the tail."""
    starts = [m.start() for m in re.finditer(r"^Error in rule", output, re.M)]
    return "\n".join(output[start:start + 4000] for start in starts) or output[-6000:]


def study(project: Path) -> dict:
    raw = yaml.safe_load((project / "config" / "paper.yaml").read_text())
    return study_config.validate_study({**raw, "smoke": True})


def test_the_smoke_run_is_the_full_study_job_for_job(smoke):
    project, output, seconds, full_jobs = smoke
    assert job_counts(output) == full_jobs
    print(f"smoke run of the paper's study: {seconds:.0f} s, {sum(full_jobs.values())} jobs")
    assert seconds <= BUDGET_S


def test_every_data_set_was_written_in_its_real_format_and_marked(smoke):
    project = smoke[0]
    config = study(project)
    root = project / config["data_root"]
    assert root == project / "data" / "stand-in"
    datasets = {e["dataset"] for e in config["experiments"]}
    assert datasets == {"mnist", "fashion_mnist", "cifar10", "imagenet"}
    for name in datasets:
        assert (root / name / "READY").exists(), name
    files = {p.name for p in root.rglob("*") if p.is_file()}
    assert "train-images-idx3-ubyte" in files or "train-images-idx3-ubyte.gz" in files
    assert {"data_batch_1", "data_batch_5", "test_batch", "batches.meta"} <= files
    assert any(p.suffix.lower() in (".jpeg", ".jpg") for p in (root / "imagenet").rglob("*"))
    assert not (project / "data" / "cifar10").exists()  # nothing beside the stand-in


def test_every_run_trained_and_was_evaluated(smoke):
    project = smoke[0]
    config = study(project)
    accuracy = pd.read_csv(project / config["results"] / "tables" / "accuracy.csv")
    runs = study_config.runs(config)
    assert len(accuracy) == len(runs) == 167
    assert set(accuracy["status"]) == {"complete"}
    assert (accuracy["epochs_done"] == 1).all()
    assert accuracy["top1_error"].between(0, 1).all()
    by_init = accuracy.groupby("init").size().to_dict()
    assert by_init == {"xavier": 87, "default": 40, "kaiming": 40}
    assert set(accuracy["model"]) == {"lenet_mnist", "lenet_cifar", "resnet20", "resnet56",
                                      "resnet18"}


def test_every_attack_table_figure_and_the_report_exist(smoke):
    project = smoke[0]
    config = study(project)
    results = project / config["results"]
    robustness = pd.read_csv(results / "tables" / "robustness.csv")
    assert set(robustness["method"]) == set(config["experiments"][0]["methods"])
    assert set(robustness["attack"]) == {"fgsm", "pgd", "tpgd", "apgd", "autoattack", "square",
                                         "onepixel", "transfer"}
    square = robustness[robustness["attack"] == "square"]
    assert square.groupby("method")["eps"].nunique().eq(30).all()
    assert (robustness["n_images"] == study_config.SMOKE_IMAGES).all()
    figures = sorted((results / "figures").glob("*.png"))
    runs = study_config.runs(config)
    expected = study_figures({run["method"] for run in runs}, set(robustness["attack"]), runs)
    assert sorted(png.stem for png in figures) == sorted(expected) == sorted(FIGURE_NAMES)
    for png in figures:
        for ext in FIGURE_FORMATS:
            assert png.with_suffix(f".{ext}").stat().st_size > 0
    for table in ("error_table", "init_table"):
        for ext in ("md", "tex", "csv"):
            assert (results / "tables" / f"{table}.{ext}").stat().st_size > 0
    inits = pd.read_csv(results / "tables" / "init_table.csv")
    assert len(inits) == 10  # a row per rule
    report = results / "report.html"
    made = snakemake(project, *SMOKE, "--report", str(report), timeout=600)
    assert made.returncode == 0, made.stdout[-4000:]
    text = report.read_text(errors="replace")
    for png in figures:
        assert png.name in text
