"""``torchrun --nproc-per-node 2 --no-python biofa train``: one run trained by 2 gloo
processes, killed mid-epoch and resumed to the numbers of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
import pytest
import torch

from run_configs import write_config

pytestmark = pytest.mark.slow

#: 2 epochs of 4 images per process and step: about 190 steps per epoch on digits.
CHANGES = {"epochs": 2, "batch_size": 8, "threads": 1, "method": "brsf", "alignment_batch": 64,
           "schedule.milestones": [1]}


def torchrun(config: Path, out: Path, processes: int = 2) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BIOFA_NATIVE": "ready"}
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc-per-node", str(processes), "--no-python", "biofa", "train", str(config),
         "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode, output


def worker(launcher: int, rank: int, deadline: float) -> int:
    """The pid of the launcher's worker process of ``rank`` (torchrun sets RANK)."""
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) != launcher:
                    continue
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"no worker of rank {rank} under torchrun {launcher}")


def state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    config = write_config(folder, **CHANGES)
    status, output = finish(torchrun(config, folder / "run"))
    assert status == 0, output[-4000:]
    return config, folder / "run"


def test_two_processes_train_one_run_and_say_so(uninterrupted):
    config, out = uninterrupted
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    assert metrics["val_acc1"].iloc[-1] > 0.5
    alignment = pd.read_csv(out / "alignment.csv")  # measured once per epoch, not per rank
    assert alignment.groupby(["epoch", "layer"]).size().eq(1).all()
    assert sorted(alignment["epoch"].unique()) == [0, 1, 2]
    session = __import__("json").loads((out / "run.json").read_text())["sessions"][-1]
    assert session["world_size"] == 2 and session["backend"] == "gloo"
    assert len(session["devices"]) == 2 and all(d.endswith(":cpu") for d in session["devices"])
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["world_size"] == 2 and len(last["ranks_rng"]) == 2
    # the ranks' generators were seeded apart after the model was built
    assert not torch.equal(last["ranks_rng"][0]["torch"], last["ranks_rng"][1]["torch"])
    assert (out / "test.json").exists() is False  # no --evaluate asked
    assert not list(out.glob("*.tmp*"))


@pytest.mark.parametrize("kill", ["SIGTERM", "SIGKILL"])
def test_a_process_killed_mid_epoch_resumes_to_the_uninterrupted_numbers(uninterrupted, tmp_path,
                                                                         kill):
    """SIGTERM to rank 1: both ranks stop at the same step and rank 0 writes a mid-epoch
    checkpoint; SIGKILL: torchrun ends rank 0, the run resumes from epoch 1's checkpoint."""
    config, straight = uninterrupted
    out = tmp_path / "run"
    process = torchrun(config, out)
    deadline = time.time() + 240
    while not (out / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.05)  # epoch 1 written: epoch 2 under way
    time.sleep(0.5)
    os.kill(worker(process.pid, 1, deadline), getattr(signal, kill))
    status, output = finish(process)
    assert status != 0, output[-3000:]
    last = torch.load(out / "last.pt", weights_only=True)
    if kill == "SIGTERM":
        assert last["partial"]["epoch"] == 2 and 0 < last["partial"]["batches"], output[-3000:]
        assert "stopped by" in output
    else:
        assert "partial" not in last and last["epoch"] == 1
    status, output = finish(torchrun(config, out))
    assert status == 0, output[-4000:]
    a, b = pd.read_csv(straight / "metrics.csv"), pd.read_csv(out / "metrics.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    for key, value in state(straight).items():
        assert torch.equal(value, state(out)[key]), key


def test_a_stopped_epoch_resumes_only_with_its_number_of_processes(uninterrupted, tmp_path):
    config, _ = uninterrupted
    out = tmp_path / "run"
    process = torchrun(config, out)
    deadline = time.time() + 240
    while not (out / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(worker(process.pid, 0, deadline), signal.SIGTERM)
    finish(process)
    assert "partial" in torch.load(out / "last.pt", weights_only=True)
    done = subprocess.run([sys.executable, "-m", "biofa.study.cli", "train", str(config), "--out",
                           str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "while training with 2 process(es), and this is 1" in done.stderr
    assert "torchrun --nproc-per-node 2" in done.stderr


def test_the_global_batch_must_divide_among_the_processes(tmp_path):
    config = write_config(tmp_path, **{**CHANGES, "batch_size": 9})
    status, output = finish(torchrun(config, tmp_path / "run"))
    assert status != 0
    assert "'batch_size': 9 is the global batch and must divide among the 2 processes" in output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_launcher_follows_the_experiments_resources():
    from biofa.study.study_config import launcher

    assert launcher({}) == launcher({"gpu": 1}) == launcher({"processes": 1, "nodes": 1}) == ""
    local = "torchrun --standalone --nnodes 1 --nproc-per-node 2 --no-python"
    assert launcher({"gpu": 2}) == launcher({"processes": 2}) == local
    assert launcher({"gpu": 4, "processes": 2}) == local  # processes, not GPUs, count
    several = launcher({"gpu": 4, "nodes": 2})
    assert several.startswith("srun --overlap --nodes 2 --ntasks-per-node 1 ")
    assert "torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d" in several
    assert '"${SLURM_JOB_ID:?resources nodes > 1 need a SLURM job' in several
    # bash runs it: outside SLURM the job fails at once, naming what is missing
    done = subprocess.run(["bash", "-c", f"{several} true"], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if not k.startswith("SLURM")})
    assert done.returncode != 0 and "need a SLURM job" in done.stderr


def test_the_paper_trains_imagenet_on_two_gpus_under_torchrun():
    from snakemake_runs import snakemake

    root = Path(__file__).resolve().parents[1]
    result = snakemake(root, "-n", "-p", "--configfile", "config/paper.yaml", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if "biofa train" in line]
    on_two = [line for line in commands if "/imagenet/" in line]
    assert len(on_two) == 7 and all(
        "torchrun --standalone --nnodes 1 --nproc-per-node 2 --no-python biofa train" in line
        for line in on_two)
    assert not [line for line in commands if "/imagenet/" not in line and "torchrun" in line]
    config = yaml.safe_load((root / "config" / "paper.yaml").read_text())
    [experiment] = [e for e in config["experiments"] if e["dataset"] == "imagenet"]
    assert experiment["batch_size"] == 256 and experiment["resources"]["gpu"] == 2
