"""``biofa train CONFIG --out DIR``: one model, one learning rule, one seed.

Reads top to bottom: set up, resume if DIR holds a checkpoint, then per epoch train,
validate, measure alignment and write every output atomically. Files in DIR:

    config.yaml     the resolved config (defaults filled in)
    metrics.csv     one row per epoch: train/val loss and top-1/top-5 accuracy, lr, seconds
    alignment.csv   long format: epoch, layer, method, weight_angle, norm_ratio, gradient_angle
    best.pt         weights of the best validation epoch (epoch 0: the initial weights)
    last.pt         weights, optimiser, scheduler and RNG states after the last epoch, or
                    at the step where a stop signal (SIGTERM, SIGUSR1, Ctrl-C) came
    status.json     running | complete | diverged, and the epoch reached
    run.json        each session that trained it: start, end, how it ended, biofa/torch/CUDA
                    versions, device, host and the git commit of the working directory
    .lock           held while a process trains into DIR: a second one is refused

Checkpoints hold tensors and plain values only and are read with ``weights_only=True``.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
import yaml
from tqdm import tqdm

from . import io, metrics
from .errors import CheckpointError, ConfigError, RunError, RunLocked
from .convert import convert
from .data import DATASETS, loaders
from .models import build


# ----------------------------------------------------------------------------- set-up

_CLAIMED: list = []  # open lock files: a claim lasts as long as the process


def claim_gpu(lock_dir: str | None = None) -> int:
    """Index of a GPU no other biofa process on this machine holds.

    With several visible GPUs, each job of a workflow (``resources: gpu=N`` lets N run at
    once) takes the first GPU whose lock file it can lock, so jobs spread one per GPU.
    A scheduler that sets CUDA_VISIBLE_DEVICES leaves one GPU visible: index 0.
    """
    import fcntl
    import os
    import tempfile

    count = torch.cuda.device_count()
    if count <= 1:
        return 0
    folder = lock_dir or tempfile.gettempdir()
    for index in range(count):
        handle = open(os.path.join(folder, f"biofa-gpu{index}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _CLAIMED.append(handle)
        return index
    return os.getpid() % count  # more jobs than GPUs: share, spread by process id


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda", claim_gpu()) if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device': {name!r} asked for, but CUDA is not available; "
                          "use 'auto' or 'cpu'")
    return torch.device(name)


def set_runtime(config: dict) -> None:
    """Threads and determinism, before any tensor is made."""
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    if config["deterministic"]:
        import os
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(config: dict, device: torch.device | str = "cpu") -> nn.Module:
    """The config's model, with its data set's normalisation inside, converted to its method."""
    info = DATASETS[config["dataset"]]
    model = build(config["model"], num_classes=info.num_classes, in_channels=info.input_size[0],
                  normalize=(info.mean, info.std))
    options = dict(config["layer"])
    if config["method"] == "dfa":
        options["input_size"] = info.input_size
    convert(model, config["method"], **options)
    model = model.to(device)
    if config.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(config: dict, model: nn.Module) -> torch.optim.Optimizer:
    """The config's optimiser over ``model.parameters()`` (with Kolen-Pollack's B).

    ``optimizer.fused`` (the default) updates every parameter in one call of torch's fused
    kernel instead of a Python loop of a few ops per parameter: the same update, and on a
    small model several percent of the step less (benchmarks/step_time.py). It falls back
    to the loop on devices without the fused kernel.
    """
    opt = config["optimizer"]
    params = list(model.parameters())
    fused = opt["fused"] and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                 for p in params)
    if opt["name"] == "sgd":
        return torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"],
                               nesterov=opt["nesterov"], weight_decay=opt["weight_decay"],
                               fused=fused)
    return torch.optim.Adam(params, lr=opt["lr"], betas=tuple(opt["betas"]),
                            weight_decay=opt["weight_decay"], fused=fused)


def make_scheduler(config: dict, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    schedule = config["schedule"]
    if schedule["name"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config["epochs"], eta_min=schedule["min_lr"])
    milestones = schedule["milestones"] if schedule["name"] == "multistep" else []
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, schedule["gamma"])


def rng_state() -> dict:
    """Every global generator's state, as tensors and plain values (a safe checkpoint)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- epochs

def _inputs(x: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _accumulate(totals: torch.Tensor, logits, y, loss) -> int:
    """Add the batch's loss sum and top-1/top-5 hits to ``totals`` on device; return its size."""
    k = min(5, logits.shape[1])
    hits = logits.topk(k, dim=1).indices == y[:, None]
    totals += torch.stack([loss.detach().float() * y.shape[0], hits[:, 0].sum().float(),
                           hits.any(dim=1).sum().float()])
    return y.shape[0]


def _summary(totals: torch.Tensor, n: int) -> dict:
    loss, top1, top5 = totals.tolist()  # the one host sync of an epoch
    return {"loss": loss / n, "acc1": top1 / n, "acc5": top5 / n, "n": n}


def train_epoch(model, loader, optimizer, scaler, device, config, desc="", *, partial=None,
                stop=None) -> dict:
    """One pass over ``loader``, or its rest when ``partial`` says where a stopped pass was.

    ``stop`` is polled after every step; when it turns true the pass ends early and
    returns ``{"stopped": {...}}``: the batches done and the running totals, which the
    next call takes back as ``partial``. Skipped batches are still drawn from the loader
    (and the RNG state restored afterwards by the caller), so data order, augmentation
    and worker seeds come out exactly as in an uninterrupted pass.
    """
    model.train()
    use_amp = config["amp"] and device.type == "cuda"
    totals, n, done = torch.zeros(3, device=device), 0, 0
    batches = iter(loader)
    if partial is not None:
        totals, n, done = partial["totals"].to(device), partial["n"], partial["batches"]
        for _ in range(done):
            next(batches)
        set_rng_state(partial["rng"])
    progress = tqdm(batches, desc=desc, leave=False, initial=done, total=len(loader),
                    disable=not sys.stderr.isatty())
    for x, y in progress:
        x, y = _inputs(x, device, config["channels_last"]), y.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n += _accumulate(totals, logits, y, loss)
        done += 1
        if stop is not None and stop() and done < len(loader):
            progress.close()
            return {"stopped": {"batches": done, "n": n, "totals": totals.cpu()}}
    return _summary(totals, n)


@torch.no_grad()
def evaluate_model(model, loader, device, amp: bool = False, channels_last: bool = False) -> dict:
    """Loss, top-1 and top-5 accuracy over a whole loader (averaged over images)."""
    model.eval()
    totals, n = torch.zeros(3, device=device), 0
    for x, y in loader:
        x, y = _inputs(x, device, channels_last), y.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x)
        n += _accumulate(totals, logits.float(), y, F.cross_entropy(logits.float(), y))
    return _summary(totals, n)


def alignment_rows(model, epoch: int, batch) -> list[dict]:
    model.train()  # gradients as training computes them: batch statistics, dropout
    rows = metrics.alignment(model, *batch) if batch is not None else metrics.alignment(model)
    return [{"epoch": epoch, **row} for row in rows]


def alignment_batch(loader, size: int, device, channels_last: bool):
    """The first ``size`` validation images: one fixed batch for every epoch's measurement."""
    if size == 0:
        return None
    xs, ys, n = [], [], 0
    for x, y in loader:
        xs.append(x), ys.append(y)
        n += len(y)
        if n >= size:
            break
    return _inputs(torch.cat(xs)[:size], device, channels_last), torch.cat(ys)[:size].to(device)


# ----------------------------------------------------------------------------- the run

METRICS_COLUMNS = ["epoch", "train_loss", "train_acc1", "train_acc5", "val_loss", "val_acc1",
                   "val_acc5", "lr", "seconds"]

#: What a run folder holds besides config.yaml; ``--restart`` removes these (and the
#: evaluations of the old weights) before training afresh.
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "alignment.csv", "status.json", "run.json",
             "test.json", "val.json")
LOCK_FILE = ".lock"

#: The signals that stop training with a checkpoint: what a scheduler sends before it
#: kills a job (SLURM: SIGTERM, or the one of ``--signal=USR1@120``) and Ctrl-C.
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")

#: Exit status after such a stop: EX_TEMPFAIL ("try again"); a workflow's retry reruns
#: the job, which resumes from the checkpoint. Ctrl-C keeps the shell's 130.
STOPPED_EXIT = 75

log = logging.getLogger("biofa.train")


class Stopped(Exception):
    """Training stopped on a signal after writing a checkpoint that resumes it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 130 if signum == signal.SIGINT else STOPPED_EXIT


@contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """The stop signals caught meanwhile, as a list the training loop polls between steps.

    A second Ctrl-C interrupts at once. Outside the main thread (where Python cannot
    install handlers) nothing is caught and signals act as usual.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        if caught and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not caught:
            log.info("%s received: stopping after the current step with a checkpoint",
                     signal.Signals(signum).name)
        caught.append(signum)

    previous = {sig: signal.signal(sig, handler)
                for sig in (getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name))}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the block: one training process per run folder.

    ``flock`` is released by the kernel when the process dies, however it dies, so a
    killed job never leaves a stale lock. A folder this call created and nothing else
    wrote into is removed again, so a run that fails before its first output leaves
    nothing behind.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLocked(f"{out} is being trained right now by {holder}; wait for it to finish, "
                        "or train into another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"biofa train (pid {os.getpid()} on {socket.gethostname()}, since {_now()})\n")
    handle.flush()
    try:
        yield
    finally:
        if created and [p.name for p in out.iterdir()] == [LOCK_FILE]:
            (out / LOCK_FILE).unlink()
            out.rmdir()
        handle.close()


def _checkout_commit(folder: Path) -> str | None:
    """The git commit of the checkout ``folder`` lies in (a workflow's), '+dirty' if edited."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _provenance(device: torch.device) -> dict:
    """What produced a run: software versions, machine and the workflow checkout."""
    from . import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    return {"biofa": __version__, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "python": platform.python_version(), "host": socket.gethostname(),
            "device": f"{device} ({name})", "threads": torch.get_num_threads(),
            "working_directory": os.getcwd(), "checkout_commit": _checkout_commit(Path.cwd())}


class _Record:
    """``run.json``: each session that trained this run folder, with what it ran on."""

    def __init__(self, out: Path, device: torch.device, fresh: bool):
        self.path = out / "run.json"
        previous = [] if fresh or not self.path.exists() else io.read_json(self.path)["sessions"]
        self.session = {**_provenance(device), "started": _now(), "ended": None, "ended_as": None}
        self.sessions = previous + [self.session]
        self.write()

    def end(self, how: str) -> None:
        self.session.update(ended=_now(), ended_as=how)
        self.write()

    def write(self) -> None:
        io.write_json(self.path, {"sessions": self.sessions})


def _clear(out: Path) -> None:
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


_CHECKPOINT_KEYS = {"model", "epoch", "status", "history", "alignment", "best", "best_model"}


def _resume_point(out: Path, config: dict, restart: bool, restart_on_change: bool) -> dict | None:
    """The checkpoint to resume from, if ``out`` holds one of this same config."""
    saved, last = out / "config.yaml", out / "last.pt"
    fresh = f"start the run afresh with: biofa train CONFIG --out {out} --restart"
    if restart:
        _clear(out)
        return None
    if not saved.exists():
        return None
    try:
        saved_config = yaml.safe_load(saved.read_text())
    except yaml.YAMLError:
        raise RunError(f"{saved} is corrupted (not valid YAML); {fresh}") from None
    if saved_config != config:
        if not restart_on_change:
            raise RunError(f"{out} holds a run with a different config; delete the folder, "
                           "choose another --out, or pass --restart-on-change")
        log.info("%s: the config changed, starting the run afresh", out)
        _clear(out)
        return None
    if not last.exists():
        return None
    state = io.load_torch(last, fresh)
    if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= set(state):
        raise CheckpointError(f"{last} is not a biofa training checkpoint; {fresh}")
    return state


def _write_outputs(out: Path, state: dict) -> None:
    """Every output file from the checkpoint's record (so deleted outputs come back)."""
    io.write_csv(out / "metrics.csv", pd.DataFrame(state["history"], columns=METRICS_COLUMNS))
    io.write_csv(out / "alignment.csv", pd.DataFrame(state["alignment"]))
    if state["best_model"] is not None and not (out / "best.pt").exists():
        io.save_torch(out / "best.pt", {"model": state["best_model"], **state["best"]})
    status = {**state["status"], "best_epoch": state["best"]["epoch"],
              "best_val_acc1": state["best"]["val_acc1"]}
    io.write_json(out / "status.json", status)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s")


def train(config: dict, out: str | Path, restart_on_change: bool = False,
          restart: bool = False) -> dict:
    """Train as ``config`` says into ``out``; resumes from ``out/last.pt``. Returns the status.

    One process at a time per folder (a lock); a stop signal (:data:`STOP_SIGNALS`)
    writes a mid-epoch checkpoint and raises :class:`Stopped`, and the same call then
    continues from that step with the numbers of an uninterrupted run. ``restart``
    discards what ``out`` holds (e.g. a corrupted checkpoint) and starts afresh.
    """
    out = Path(out)
    with _locked(out), _stop_on_signals() as signals:
        return _train(config, out, restart_on_change, restart, signals)


def _train(config: dict, out: Path, restart_on_change: bool, restart: bool,
           signals: list[int]) -> dict:
    last = _resume_point(out, config, restart, restart_on_change)
    if last is not None and last["status"]["status"] != "running":
        _write_outputs(out, last)  # finished: only restore what may have been deleted
        return io.read_json(out / "status.json")

    set_runtime(config)
    device = resolve_device(config["device"])
    seed_everything(config["seed"])
    data = loaders(config["dataset"], config["data_root"], config["batch_size"],
                   workers=config["workers"], seed=config["seed"],
                   eval_batch_size=config["eval_batch_size"], device=device)
    model = build_model(config, device)
    optimizer = make_optimizer(config, model)
    scheduler = make_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=config["amp"] and device.type == "cuda")
    probe = alignment_batch(data["val"], config["alignment_batch"], device, config["channels_last"])

    partial = None
    if last is not None:
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        scaler.load_state_dict(last["scaler"])
        set_rng_state(last["rng"])
        state = {key: last[key] for key in ("history", "alignment", "best", "best_model", "status")}
        partial = last.get("partial")
        if partial is not None:
            partial = {**partial, "rng": last["rng"]}
            log.info("resuming %s in epoch %d at step %d/%d", out, partial["epoch"],
                     partial["batches"] + 1, len(data["train"]))
        else:
            log.info("resuming %s after epoch %d", out, last["epoch"])
    else:
        io.write_yaml(out / "config.yaml", config)
        state = {"history": [], "alignment": alignment_rows(model, 0, probe),
                 "best": {"epoch": 0, "val_acc1": -1.0}, "best_model": None,
                 "status": {"status": "running", "epoch": 0}}
        io.save_torch(out / "best.pt", {"model": model.state_dict(), **state["best"]})
    record = _Record(out, device, fresh=last is None)

    def checkpoint(epoch: int, **extra) -> None:
        io.save_torch(out / "last.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "epoch": epoch, **state, **extra})

    def stop(where: str) -> Stopped:
        name = signal.Signals(signals[0]).name
        record.end(f"stopped by {name}")
        return Stopped(f"{out}: stopped by {name} {where}; {out / 'last.pt'} resumes it: run the "
                       "same command again", signals[0])

    epoch_seconds: list[float] = []
    try:
        for epoch in range(state["status"]["epoch"] + 1, config["epochs"] + 1):
            if signals:  # arrived while the previous epoch was validated: its checkpoint is written
                raise stop(f"after epoch {epoch - 1}")
            started = time.perf_counter()
            data["train"].generator.manual_seed(config["seed"] * 1_000_003 + epoch)  # resumable shuffles
            lr = optimizer.param_groups[0]["lr"]
            earlier = partial["seconds"] if partial else 0.0  # spent before a mid-epoch stop
            fit = train_epoch(model, data["train"], optimizer, scaler, device, config,
                              desc=f"epoch {epoch}/{config['epochs']}", partial=partial,
                              stop=lambda: bool(signals))
            partial = None
            if "stopped" in fit:
                done = fit["stopped"]["batches"]
                checkpoint(epoch - 1, partial={"epoch": epoch, **fit["stopped"],
                                               "seconds": earlier + time.perf_counter() - started})
                raise stop(f"in epoch {epoch} after step {done}/{len(data['train'])}")
            scheduler.step()
            if not math.isfinite(fit["loss"]):
                log.info("%s: diverged in epoch %d; keeping the best epoch %d", out, epoch,
                         state["best"]["epoch"])
                state["status"] = {"status": "diverged", "epoch": epoch,
                                   "reason": f"training loss became {fit['loss']} in epoch {epoch}"}
                break
            val = evaluate_model(model, data["val"], device, config["amp"], config["channels_last"])
            state["alignment"] += alignment_rows(model, epoch, probe)
            seconds = earlier + time.perf_counter() - started
            state["history"].append({
                "epoch": epoch, "train_loss": fit["loss"], "train_acc1": fit["acc1"],
                "train_acc5": fit["acc5"], "val_loss": val["loss"], "val_acc1": val["acc1"],
                "val_acc5": val["acc5"], "lr": lr, "seconds": round(seconds, 3)})
            if val["acc1"] > state["best"]["val_acc1"]:
                state["best"] = {"epoch": epoch, "val_acc1": val["acc1"]}
                state["best_model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                io.save_torch(out / "best.pt", {"model": state["best_model"], **state["best"]})
            done = epoch == config["epochs"]
            state["status"] = {"status": "complete" if done else "running", "epoch": epoch}
            checkpoint(epoch)
            _write_outputs(out, state)
            epoch_seconds.append(time.perf_counter() - started)
            eta = sum(epoch_seconds) / len(epoch_seconds) * (config["epochs"] - epoch)
            log.info("epoch %d/%d  train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% | lr %.3g "
                     "| %.1fs | eta %s", epoch, config["epochs"], fit["loss"], 100 * fit["acc1"],
                     val["loss"], 100 * val["acc1"], lr, seconds, _duration(eta))
        if state["status"]["status"] == "diverged":
            _record_divergence(out, state)
    except Stopped:
        raise
    except BaseException as error:
        record.end(f"failed: {type(error).__name__}")
        raise
    record.end(state["status"]["status"])
    return io.read_json(out / "status.json")


def _record_divergence(out: Path, state: dict) -> None:
    """Mark the run diverged; last.pt keeps the weights of a finite epoch, never NaNs.

    Those are last.pt's own when it was written at an epoch's end, otherwise (no epoch
    finished yet, or a mid-epoch checkpoint of the epoch that diverged) best.pt's,
    under best.pt's epoch.
    """
    fresh = f"start the run afresh with: biofa train CONFIG --out {out} --restart"
    kept = io.load_torch(out / "last.pt", fresh) if (out / "last.pt").exists() else None
    if kept is None or "partial" in kept:
        best = io.load_torch(out / "best.pt", fresh)
        kept = {"model": best["model"], "epoch": best["epoch"]}
    io.save_torch(out / "last.pt", {**kept, **state})
    _write_outputs(out, state)
