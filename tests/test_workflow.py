"""The Snakemake workflow: the paper's DAG, config validation, and a small study end to end."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def snakemake(cwd, *args, timeout=900):
    return subprocess.run(["snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def job_counts(output: str) -> dict:
    """Parse snakemake's 'Job stats' table."""
    table = output[output.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the workflow and configs, with a smaller version of the default study."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "workflow", root / "workflow")
    shutil.copytree(ROOT / "config", root / "config")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    experiment = config["experiments"][0]
    experiment.update(methods=["bp", "fa"], seeds=[0], epochs=2,
                      schedule={"name": "multistep", "milestones": [1], "gamma": 0.1})
    experiment["optimizers"]["sgd"]["lr"] = {"default": 0.01, "fa": 0.001}  # only its methods
    config["attacks"]["n_images"] = 60
    (root / "config" / "small.yaml").write_text(yaml.safe_dump(config))
    return root


def test_paper_config_lists_every_training_run():
    result = snakemake(ROOT, "-n", "--configfile", "config/paper.yaml")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # MNIST and Fashion-MNIST LeNet (7 + 7), CIFAR-10 LeNet/ResNet-20/ResNet-56 x SGD/Adam
    # (42), ImageNet ResNet-18 (7): every method of the paper plus kp, seed 2021
    assert counts["train"] == 63 and counts["evaluate"] == 63 and counts["data"] == 4
    # ResNet-20 SGD: 7 methods x (4 white-box attacks x 2 gradients + square + onepixel + transfer)
    assert counts["attack"] == 7 * 11


@pytest.mark.parametrize("change, message", [
    (lambda c: c["experiments"][0]["methods"].append("fb"),
     "config key 'experiments[0].methods[7]': got \"fb\"; allowed: one of bp,"),
    (lambda c: c["experiments"][0].pop("epochs"), "config key 'experiments[0].epochs' is missing"),
    (lambda c: c["experiments"][0].update(learning_rate=0.1),
     "unknown config key 'experiments[0].learning_rate'"),
    (lambda c: c["experiments"][0]["optimizers"]["sgd"]["lr"].update(fa=-1),
     "config key 'experiments[0].optimizers.sgd.lr.fa': got -1; allowed: a number > 0"),
])
def test_bad_config_fails_at_validation_naming_the_key(project, change, message):
    """biofa's study checks run first: snakemake stops with their one line, writing nothing."""
    config = yaml.safe_load((project / "config" / "config.yaml").read_text())
    change(config)
    bad = project / "config" / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    results = project / "results"
    before = results.exists() and sorted(results.rglob("*"))
    result = snakemake(project, "-n", "--configfile", str(bad))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert (results.exists() and sorted(results.rglob("*"))) == before


def test_experiments_differing_only_in_methods_keep_their_own_settings(tmp_path):
    """Each run's config and resources come from the experiment that lists its method."""
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    shutil.copytree(ROOT / "config", tmp_path / "config")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    first = config["experiments"][0]
    first.update(methods=["bp"], seeds=[0], epochs=2, schedule={"name": "constant"})
    first["optimizers"]["sgd"]["lr"] = 0.01
    second = {**first, "methods": ["fa"], "epochs": 3, "optimizers": {"sgd": {"name": "sgd", "lr": 0.002}},
              "resources": {"gpu": 0, "threads": 1, "mem_mb": 3210, "runtime": 15}}
    config["experiments"].append(second)
    (tmp_path / "config" / "two.yaml").write_text(yaml.safe_dump(config))
    configs = [f"results/configs/digits/lenet_mnist/sgd/{m}/seed0.yaml" for m in ("bp", "fa")]
    result = snakemake(tmp_path, *configs, "--cores", "1", "--configfile", "config/two.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    bp, fa = (yaml.safe_load((tmp_path / name).read_text()) for name in configs)
    assert (bp["epochs"], bp["optimizer"]["lr"]) == (2, 0.01)
    assert (fa["epochs"], fa["optimizer"]["lr"]) == (3, 0.002)

    plan = snakemake(tmp_path, "results/runs/digits/lenet_mnist/sgd/fa/seed0/best.pt", "-n",
                     "--configfile", "config/two.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    train = plan.stdout[plan.stdout.index("rule train:"):]
    assert "mem_mb=3210" in train[:train.index("\n\n")]


def test_small_study_end_to_end(project):
    run = snakemake(project, "--cores", "2", "--configfile", "config/small.yaml")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = project / "results"
    for name in ("training", "alignment", "alignment_layers", "robustness", "onepixel", "transfer"):
        figure = results / "figures" / f"{name}.png"
        assert figure.stat().st_size > 5000 and figure.read_bytes()[:4] == b"\x89PNG"
    table = (results / "tables" / "error_table.md").read_text()
    assert "bp" in table and "fa" in table and "(" in table
    robustness = (results / "tables" / "robustness.csv").read_text()
    assert "transfer" in robustness and "feedback" in robustness and "true" in robustness

    report = snakemake(project, "--report", "results/report.html", "--configfile", "config/small.yaml")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (results / "report.html").read_text(errors="ignore")
    assert len(html) > 50_000 and "robustness" in html

    again = snakemake(project, "-n", "--configfile", "config/small.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr

    # delete one checkpoint: only that run and what depends on it is redone
    (results / "runs/digits/lenet_mnist/sgd/fa/seed0/best.pt").unlink()
    plan = snakemake(project, "-n", "--configfile", "config/small.yaml")
    counts = job_counts(plan.stdout)
    assert counts["train"] == 1 and counts["evaluate"] == 1
    assert counts["attack"] == 4  # fa's pgd x 2 gradients, square, transfer; bp untouched
    assert "run_config" not in counts and "data" not in counts


def test_lint_is_clean():
    result = snakemake(ROOT, "--lint")
    assert result.returncode == 0
    assert "Lints for" not in result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr
