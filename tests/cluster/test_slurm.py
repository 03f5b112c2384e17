"""The workflow through profiles/slurm on a real (single-node) SLURM cluster.

One study, run twice: locally, and through SLURM with one train job cancelled mid-way
(scancel) and snakemake run again. The SLURM results must equal the local ones, the train
jobs must have gone through the SLURM controller (with their GPU request), and the rerun
must resume the cancelled run from its last checkpoint and recompute nothing else.
"""

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from snakemake_runs import job_counts
from snakemake_runs import snakemake as run_snakemake

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
RUNS = "results/runs/digits/lenet_mnist/sgd/xavier"
TIMEOUT = 900
# poll SLURM every few seconds instead of the defaults meant for real clusters
FAST_POLLING = ["--jobs", "2", "--slurm-init-seconds-before-status-checks", "2",
                "--seconds-between-status-checks", "2", "--slurm-keep-successful-logs"]


def snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(cwd, *args, timeout=TIMEOUT)


def make_project(folder: Path) -> Path:
    """The default quick study, cut to bp and fa with one seed; train asks for a GPU and runs
    long enough (40 epochs) to be cancelled part-way."""
    folder.mkdir()
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(ROOT / name, folder / name)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    experiment = config["experiments"][0]
    experiment.update(methods=["bp", "fa"], seeds=[0], epochs=40)
    experiment["optimizers"]["sgd"]["lr"] = {"default": 0.01, "fa": 0.001}
    experiment["optimizers"] = {"sgd": experiment["optimizers"]["sgd"]}  # SGD alone
    experiment["resources"]["gpu"] = 1
    config["attacks"]["n_images"] = 60
    (folder / "config" / "small.yaml").write_text(yaml.safe_dump(config))
    return folder


def squeue(*fields: str) -> list[list[str]]:
    result = subprocess.run(["squeue", "--noheader", "--states=all",
                             "--format=" + "|".join(fields)], capture_output=True, text=True)
    return [line.split("|") for line in result.stdout.splitlines()]


def cancel_when_checkpointed(run: Path, cancelled: dict, stop: threading.Event) -> None:
    """scancel the SLURM job training `run` once it has written its first checkpoint."""
    while not stop.is_set():
        for job_id, comment, state in squeue("%i", "%k", "%T"):
            if (comment.startswith("rule_train_") and "_fa_" in comment and state == "RUNNING"
                    and (run / "last.pt").exists()):
                time.sleep(0.5)
                subprocess.run(["scancel", job_id], check=True)
                cancelled.update(job=job_id, at=time.monotonic())
                return
        time.sleep(0.2)


def compare_results(local: Path, cluster: Path) -> None:
    for method in ("bp", "fa"):
        ours = json.loads((cluster / RUNS / method / "seed0/test.json").read_text())
        assert ours == json.loads((local / RUNS / method / "seed0/test.json").read_text())
        metrics = [pd.read_csv(p / RUNS / method / "seed0/metrics.csv").drop(columns="seconds")
                   for p in (local, cluster)]
        pd.testing.assert_frame_equal(*metrics)
    for table in ("accuracy", "robustness", "alignment", "error_table"):
        pd.testing.assert_frame_equal(pd.read_csv(local / f"results/tables/{table}.csv"),
                                      pd.read_csv(cluster / f"results/tables/{table}.csv"))
    assert sorted(p.name for p in (local / "results/figures").iterdir()) == \
        sorted(p.name for p in (cluster / "results/figures").iterdir())


def test_workflow_on_slurm_resumes_a_cancelled_job(slurm_cluster, tmp_path):
    local = make_project(tmp_path / "local")
    result = snakemake(local, "--cores", "2", "--configfile", "config/small.yaml")
    assert result.returncode == 0, result.stdout[-4000:]

    cluster = make_project(tmp_path / "cluster")
    fa_run = cluster / RUNS / "fa/seed0"
    cancelled, stop = {}, threading.Event()
    watcher = threading.Thread(target=cancel_when_checkpointed, args=(fa_run, cancelled, stop))
    watcher.start()
    try:  # --retries 0: the cancelled job stays failed, so the second run has to resume it
        first = snakemake(cluster, "--profile", "profiles/slurm", "--configfile",
                          "config/small.yaml", "--retries", "0", *FAST_POLLING)
    finally:
        stop.set()
        watcher.join()
    assert cancelled, "the fa train job finished before it could be cancelled:\n" + \
        first.stdout[-4000:]
    assert first.returncode != 0 and "Error in rule train" in first.stdout
    checkpoint = torch.load(fa_run / "last.pt", map_location="cpu", weights_only=True)
    assert 1 <= checkpoint["epoch"] < 40
    # scancel's SIGTERM reached biofa train, which checkpointed the step it was at
    assert "stopped by SIGTERM" in (cluster / "results/logs/train/digits/lenet_mnist/sgd/xavier/fa/seed0.log").read_text()
    stopped_in = checkpoint["partial"]["epoch"] if "partial" in checkpoint else checkpoint["epoch"]
    assert (cluster / RUNS / "bp/seed0/test.json").exists()  # keep-going finished bp

    second = snakemake(cluster, "--profile", "profiles/slurm", "--configfile",
                       "config/small.yaml", *FAST_POLLING)
    assert second.returncode == 0, second.stdout[-4000:]
    counts = job_counts(second.stdout)
    # only the cancelled run and what depends on it: its train (which tests it) and its
    # attack job (4 attacks)
    assert counts["train"] == 1 and counts["attack"] == 1 and "evaluate" not in counts
    assert "run_config" not in counts and "data" not in counts
    train_log = (cluster / "results/logs/train/digits/lenet_mnist/sgd/xavier/fa/seed0.log").read_text()
    resumed = re.search(rf"resuming {fa_run.relative_to(cluster)} (?:after epoch|in epoch) (\d+)",
                        train_log)
    assert resumed, train_log[-2000:]
    assert int(resumed.group(1)) == stopped_in

    compare_results(local, cluster)

    # the train jobs went through SLURM: their logs (one per job id) and the controller's record
    logs = sorted((cluster / ".snakemake/slurm_logs/rule_train").glob("*/*.log"))
    job_ids = {p.stem for p in logs}
    assert {p.parent.name for p in logs} == {"digits_lenet_mnist_sgd_xavier_bp_0",
                                             "digits_lenet_mnist_sgd_xavier_fa_0"}
    assert len(job_ids) == 3 and cancelled["job"] in job_ids  # bp, fa cancelled, fa resumed
    states = {job_id: state for job_id, state in squeue("%i", "%T")}
    assert states[cancelled["job"]] == "CANCELLED"
    assert sorted(states[j] for j in job_ids - {cancelled["job"]}) == ["COMPLETED"] * 2
    for job_id in job_ids:
        job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                             text=True).stdout
        assert "gres:gpu:1" in job, job  # the fake GPU was requested and scheduled

    report = snakemake(cluster, "--report", "results/report.html", "--configfile",
                       "config/small.yaml")
    assert report.returncode == 0, report.stdout[-3000:]
    html = (cluster / "results/report.html").read_text(errors="ignore")
    assert len(html) > 50_000 and "robustness" in html and "error_table" in html


def test_a_two_process_train_job_goes_through_the_profile(slurm_cluster, tmp_path):
    """An experiment asking `processes: 2` (CPU, gloo): one SLURM job with its cores, in
    which torchrun starts the two processes that train the run together."""
    project = make_project(tmp_path / "ddp")
    config = yaml.safe_load((project / "config" / "small.yaml").read_text())
    experiment = config["experiments"][0]
    experiment.update(methods=["brsf"], epochs=2, schedule={"name": "multistep", "milestones": [1], "gamma": 0.1})
    experiment["optimizers"]["sgd"]["lr"] = 0.01
    config["attacks"]["transfer"]["eps"] = []  # no bp run to craft them on
    experiment["resources"] = {"gpu": 0, "processes": 2, "threads": 2, "mem_mb": 2000,
                               "runtime": 15}
    (project / "config" / "ddp.yaml").write_text(yaml.safe_dump(config))
    run = f"{RUNS}/brsf/seed0"
    result = snakemake(project, "--profile", "profiles/slurm", "--configfile", "config/ddp.yaml",
                       *FAST_POLLING, f"{run}/test.json")
    assert result.returncode == 0, result.stdout[-4000:]
    session = json.loads((project / run / "run.json").read_text())["sessions"][-1]
    assert session["world_size"] == 2 and session["backend"] == "gloo"
    assert session["threads"] == 1  # the job's 2 cores, one per process
    metrics = pd.read_csv(project / run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and metrics["val_acc1"].iloc[-1] > 0.5
    assert json.loads((project / run / "test.json").read_text())["n_images"] > 0
    log = (project / "results/logs/train/digits/lenet_mnist/sgd/xavier/brsf/seed0.log").read_text()
    assert "torchrun" in result.stdout or "torchrun" in log
    logs = sorted((project / ".snakemake/slurm_logs/rule_train").glob("*/*.log"))
    assert len(logs) == 1
    job = subprocess.run(["scontrol", "show", "job", logs[0].stem], capture_output=True,
                         text=True).stdout
    assert re.search(r"NumCPUs=2\b", job), job
