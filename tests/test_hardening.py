"""Run folders from elsewhere, jobs a cluster stops, full disks, two jobs on one folder."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import biofa.study.train
from biofa.errors import CheckpointError, RunError, UntrustedCheckpoint
from biofa.study import io
from biofa.study.cli import main
from biofa.study.evaluate import load_run
from run_configs import write_config


def one_line_error(capsys) -> str:
    """The error printed, which must be one line (progress lines, which start with a time, aside)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line)]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch LeNet run on digits (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("trained")
    config = write_config(root, epochs=1, **{"schedule.milestones": [1]})
    assert main(["train", str(config), "--out", str(root / "run")]) == 0
    return root / "run", config


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for path in run.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


class Payload:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


# ----------------------------------------------------------------------------- untrusted files

def test_a_poisoned_run_folder_is_refused_by_every_command_and_the_api(trained, tmp_path, capsys):
    run, config = trained
    poisoned = copy_run(run, tmp_path / "poisoned")
    marker = tmp_path / "EXECUTED"
    for name in ("best.pt", "last.pt"):
        torch.save({"model": Payload(f"touch {marker}"), "epoch": 1}, poisoned / name)
    # the last.pt of a run still in progress, as a resume would read it
    status = json.loads((poisoned / "status.json").read_text())
    before = {name: (poisoned / name).read_bytes() for name in ("best.pt", "last.pt")}

    assert main(["evaluate", str(poisoned)]) == 2
    message = one_line_error(capsys)
    assert f"refused to load {poisoned / 'best.pt'}" in message and "posix.system" in message
    assert "nothing was executed" in message
    assert not (poisoned / "test.json").exists()

    out = tmp_path / "pgd.csv"
    assert main(["attack", str(poisoned), "--attack", "pgd", "--eps", "0,0.1", "--n", "8",
                 "--out", str(out)]) == 2
    assert "refused to load" in one_line_error(capsys) and not out.exists()

    assert main(["attack", str(run), "--attack", "transfer", "--eps", "0,0.1", "--n", "8",
                 "--source", str(poisoned), "--out", str(out)]) == 2
    assert f"refused to load {poisoned / 'best.pt'}" in one_line_error(capsys) and not out.exists()

    assert main(["train", str(config), "--out", str(poisoned)]) == 2
    message = one_line_error(capsys)
    assert f"refused to load {poisoned / 'last.pt'}" in message and "--restart" in message

    with pytest.raises(UntrustedCheckpoint, match="posix.system"):
        load_run(poisoned)

    assert not marker.exists()
    assert {name: (poisoned / name).read_bytes() for name in before} == before
    assert json.loads((poisoned / "status.json").read_text()) == status


def test_checkpoints_hold_only_what_weights_only_loading_accepts(trained):
    run, _ = trained
    for name in ("best.pt", "last.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(run / name) == []
        torch.load(run / name, weights_only=True)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_last_checkpoint_names_the_file_and_the_way_out(trained, tmp_path, capsys, damage):
    run, config = trained
    copy = copy_run(run, tmp_path / "run")
    last = copy / "last.pt"
    content = last.read_bytes()
    last.write_bytes({"truncated": content[: len(content) // 2], "garbage": b"\x80\x02junk" * 50,
                      "empty": b""}[damage])
    assert main(["train", str(config), "--out", str(copy)]) == 2
    message = one_line_error(capsys)
    assert str(last) in message and ("truncated" in message or "corrupted" in message)
    assert f"biofa train CONFIG --out {copy} --restart" in message

    assert main(["train", str(config), "--out", str(copy), "--restart"]) == 0
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert json.loads((copy / "status.json").read_text())["status"] == "complete"


def test_a_damaged_best_checkpoint_is_explained_by_evaluate(trained, tmp_path, capsys):
    run, _ = trained
    copy = copy_run(run, tmp_path / "run")
    (copy / "best.pt").write_bytes((copy / "best.pt").read_bytes()[:100])
    assert main(["evaluate", str(copy)]) == 2
    message = one_line_error(capsys)
    assert str(copy / "best.pt") in message and "--restart" in message
    torch.save({"model": {"net.conv1.weight": torch.zeros(1)}}, copy / "best.pt")
    assert main(["evaluate", str(copy)]) == 2
    assert "does not hold the weights of the model" in one_line_error(capsys)


# ----------------------------------------------------------------------------- stop and resume

def start_training(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "biofa.study.cli", "train", str(config), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def last_state(out: Path) -> dict:
    return torch.load(out / "last.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_a_signalled_run_checkpoints_mid_epoch_and_resumes_bit_for_bit(tmp_path, signame):
    """SLURM's preemption signal mid-epoch; the rerun equals an uninterrupted run exactly.

    brSF: its magnitudes are redrawn from the global RNG at every step, so a resume that
    lost the RNG state, the data order or the step within the epoch would show.
    """
    # 2-image batches: 629 steps an epoch, so the signal lands inside one
    config = write_config(tmp_path, method="brsf", epochs=2, batch_size=2,
                          **{"schedule.milestones": [1]})
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", str(config), "--out", str(straight)]) == 0

    process = start_training(config, stopped)
    wait_for(stopped / "run.json", process)
    time.sleep(0.3)
    process.send_signal(getattr(signal, signame))
    _, err = process.communicate(timeout=120)
    assert process.returncode == biofa.study.train.STOPPED_EXIT == 75, err
    assert f"stopped by {signame} in epoch" in err and "run the same command again" in err
    checkpoint = last_state(stopped)
    partial = checkpoint["partial"]
    assert 0 < partial["batches"] < 629 and partial["epoch"] == checkpoint["epoch"] + 1
    sessions = json.loads((stopped / "run.json").read_text())["sessions"]
    assert [s["ended_as"] for s in sessions] == [f"stopped by {signame}"]

    assert main(["train", str(config), "--out", str(stopped)]) == 0
    a, b = pd.read_csv(straight / "metrics.csv"), pd.read_csv(stopped / "metrics.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    pd.testing.assert_frame_equal(pd.read_csv(straight / "alignment.csv"),
                                  pd.read_csv(stopped / "alignment.csv"))
    one, two = last_state(straight), last_state(stopped)
    assert "partial" not in two
    for key, value in one["model"].items():
        assert torch.equal(value, two["model"][key]), key
    for index, moments in one["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(two["optimizer"]["state"][index][name]))
    assert torch.equal(one["rng"]["torch"], two["rng"]["torch"])
    sessions = json.loads((stopped / "run.json").read_text())["sessions"]
    assert [s["ended_as"] for s in sessions] == [f"stopped by {signame}", "complete"]


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, capsys):
    config = write_config(tmp_path, epochs=3, batch_size=2, **{"schedule.milestones": [1]})
    out = tmp_path / "run"
    process = start_training(config, out)
    try:
        wait_for(out / "run.json", process)
        assert main(["train", str(config), "--out", str(out)]) == 2
        message = one_line_error(capsys)
        assert f"{out} is being trained right now by biofa train (pid {process.pid}" in message
        assert "train into another --out" in message
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    assert process.returncode == 75
    # the lock went with the process: the folder can be trained again
    assert main(["train", str(config), "--out", str(out), "--set", "epochs=1"]) == 2  # other config
    assert "different config" in one_line_error(capsys)


def test_a_run_that_fails_before_writing_anything_leaves_no_folder(tmp_path, capsys):
    config = write_config(tmp_path, device="cuda:7") if not torch.cuda.is_available() else None
    if config is None:
        pytest.skip("needs a machine without CUDA")
    out = tmp_path / "never"
    assert main(["train", str(config), "--out", str(out)]) == 2
    assert "CUDA is not available" in one_line_error(capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------- full disk

def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, epochs=3, **{"schedule.milestones": [2]})
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def save(obj, target, *args, **kwargs):
        if Path(target).name.startswith(".last.pt."):
            saves.append(target)
            if len(saves) == 2:  # the checkpoint after epoch 2: half written, then the disk is full
                Path(target).write_bytes(b"PK\x03\x04 half a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main(["train", str(config), "--out", str(out)]) == 2
    message = one_line_error(capsys)
    assert f"no space left on the device while writing {out / 'last.pt'}" in message
    assert "the previous file is intact" in message
    assert last_state(out)["epoch"] == 1  # the checkpoint of epoch 1, whole
    assert not list(out.glob(".last.pt.*"))  # no temporary file left behind
    assert json.loads((out / "run.json").read_text())["sessions"][0]["ended_as"] == "failed: RunError"

    monkeypatch.setattr(torch, "save", real_save)
    assert main(["train", str(config), "--out", str(out)]) == 0
    assert last_state(out)["epoch"] == 3


def test_save_torch_reports_a_full_disk_for_a_new_file_too(tmp_path, monkeypatch):
    def full(obj, target, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunError, match="no space left on the device while writing .*new.pt"):
        io.save_torch(tmp_path / "new.pt", {"x": torch.zeros(1)})
    assert list(tmp_path.iterdir()) == []


def test_load_torch_names_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'x.pt'} does not exist; do this"):
        io.load_torch(tmp_path / "x.pt", "do this")


# ----------------------------------------------------------------------------- divergence

def test_a_run_diverging_in_its_first_epoch_keeps_its_initial_weights(tmp_path):
    """No finite epoch yet: last.pt holds the initial weights (epoch 0), never the NaNs."""
    config = write_config(tmp_path, method="fa", epochs=3, **{"optimizer.lr": 1.0e6,
                                                              "schedule.milestones": [2]})
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out)]) == 0
    last, best = last_state(out), torch.load(out / "best.pt", weights_only=True)
    assert last["status"]["status"] == "diverged" and last["epoch"] == best["epoch"] == 0
    for key, value in best["model"].items():
        assert torch.equal(last["model"][key], value), key
        assert torch.isfinite(value.float()).all(), key


# ----------------------------------------------------------------------------- the command's errors

def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only biofa's own errors become one line and exit 2; a ValueError from a bug propagates."""

    def broken(*args, **kwargs):
        raise ValueError("a bug inside torch or pandas")

    monkeypatch.setattr(biofa.study.train, "train", broken)
    with pytest.raises(ValueError, match="a bug inside"):
        main(["train", str(write_config(tmp_path)), "--out", str(tmp_path / "run")])


class NoisyDigits(torch.utils.data.Dataset):
    """Random augmentation drawn in the worker that loads the image, as torchvision's are."""

    def __init__(self, n=96):
        self.x, self.y = torch.rand(n, 16, generator=torch.Generator().manual_seed(0)), torch.arange(n) % 4

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index] + 0.1 * torch.randn(16), self.y[index]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_pass_stopped_and_continued_equals_one_pass(workers):
    """The resume logic itself, with worker processes whose augmentation uses their own RNG."""
    import biofa
    from biofa.study.train import rng_state, train_epoch

    config = {"amp": False, "channels_last": False}
    cpu = torch.device("cpu")

    def setup():
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        biofa.convert(model, "brsf")
        loader = torch.utils.data.DataLoader(NoisyDigits(), batch_size=8, shuffle=True,
                                             num_workers=workers, generator=torch.Generator())
        loader.generator.manual_seed(7)
        return model, loader, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), \
            torch.amp.GradScaler("cpu", enabled=False)

    model, loader, optimizer, scaler = setup()
    whole = train_epoch(model, loader, optimizer, scaler, cpu, config)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    model, loader, optimizer, scaler = setup()
    steps = iter(range(1, 100))
    stopped = train_epoch(model, loader, optimizer, scaler, cpu, config,
                          stop=lambda: next(steps) == 5)["stopped"]
    assert stopped["batches"] == 5
    partial = {**stopped, "rng": rng_state()}
    weights, moments = model.state_dict(), optimizer.state_dict()
    torch.manual_seed(12345)  # a new process: its RNG is elsewhere until the state is restored
    model, loader, optimizer, scaler = setup()
    model.load_state_dict(weights)
    optimizer.load_state_dict(moments)
    rest = train_epoch(model, loader, optimizer, scaler, cpu, config, partial=partial)
    assert rest == whole
    for key, value in expected.items():
        assert torch.equal(model.state_dict()[key], value), key
