"""``biofa train CONFIG --out DIR``: one model, one learning rule, one seed.

Reads top to bottom: set up, resume if DIR holds a checkpoint, then per epoch train,
validate, measure alignment and write every output atomically (the files are listed
in :mod:`biofa.study.run`). One process trains a folder at a time; a stop signal
(SIGTERM, SIGUSR1, Ctrl-C) writes a checkpoint at the current step, and running the
same command again continues from it with the numbers of an uninterrupted run.

Checkpoints hold tensors and plain values only and are read with ``weights_only=True``.
"""

from __future__ import annotations

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
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from .. import metrics
from ..errors import CheckpointError, RunError
from ..layers import fixed_state, restore_step_chores, step_chores
from ..parallel import data_parallel
from . import io
from .data import loaders
from .device import resolve_device
from .distributed import World, per_process_batch
from .evaluate import accumulate, evaluate_model, inputs, summary
from .evaluate import evaluate as evaluate_split
from .run import RunFolder, build_model, now


# ----------------------------------------------------------------------------- set-up

def set_runtime(config: dict) -> None:
    """Threads and determinism, before any tensor is made."""
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    if config["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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

def train_epoch(model, loader, optimizer, scaler, device, config, desc="", *, partial=None,
                stop=None, world: World = World()) -> dict:
    """One pass over ``loader``, or its rest when ``partial`` says where a stopped pass was.

    ``stop`` is polled after every step; when it turns true the pass ends early and
    returns ``{"stopped": {...}}``: the batches done and the running totals, which the
    next call takes back as ``partial``. Skipped batches are still drawn from the loader
    (and the RNG state restored afterwards by the caller), so data order, augmentation
    and worker seeds come out exactly as in an uninterrupted pass.

    Under data parallelism (``world``) the loss and accuracy totals are summed over the
    ranks, and ``stop`` must be polled on every rank alike.
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
        x, y = inputs(x, device, config["channels_last"]), y.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n += accumulate(totals, logits, y, loss)
        done += 1
        if stop is not None and stop() and done < len(loader):
            progress.close()
            totals, n = world.sum(totals, n)
            return {"stopped": {"batches": done, "n": n, "totals": totals.cpu()}}
    return summary(*world.sum(totals, n))


def step_model(model: nn.Module, config: dict) -> nn.Module:
    """What the training step calls: ``model``, or with ``compile`` in the config,
    ``torch.compile(model, fullgraph=True)``, in the config's mode (``true``: torch's default).

    Only the forward pass and the rule's backward are compiled (one graph each; the
    rules are operators, see ``biofa.ops``); the optimiser step, evaluation, alignment
    and checkpoints use the model itself, whose state dict the compiled one shares.
    Compiling costs tens of seconds at the first step (and again for a last batch of
    another size), so it pays on long runs: GPUs, bigger models; on a CPU, small models
    are bound by per-operator overhead that compiling does not remove
    (``benchmarks/step_time.py --compile``).
    """
    mode = config.get("compile", False)
    if not mode:
        return model
    return torch.compile(model, fullgraph=True, mode=None if mode is True else mode)


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
    return inputs(torch.cat(xs)[:size], device, channels_last), torch.cat(ys)[:size].to(device)


# ----------------------------------------------------------------------------- the run

METRICS_COLUMNS = ["epoch", "train_loss", "train_acc1", "train_acc5", "val_loss", "val_acc1",
                   "val_acc5", "lr", "seconds"]

#: The signals that stop training with a checkpoint: what a scheduler sends before it
#: kills a job (SLURM: SIGTERM, or the one of ``--signal=USR1@120``) and Ctrl-C.
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")

#: Exit status after such a stop: EX_TEMPFAIL ("try again"); a workflow's retry reruns
#: the job, which resumes from the checkpoint. Ctrl-C keeps the shell's 130.
STOPPED_EXIT = 75

log = logging.getLogger("biofa.study.train")


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
    from .. import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    return {"biofa": __version__, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "python": platform.python_version(), "host": socket.gethostname(),
            "device": f"{device} ({name})", "threads": torch.get_num_threads(),
            "working_directory": os.getcwd(), "checkout_commit": _checkout_commit(Path.cwd())}


class _Record:
    """``run.json``: each session that trained this run folder, with what it ran on."""

    def __init__(self, out: RunFolder, device: torch.device, fresh: bool, world: dict):
        self.path = out / out.RECORD
        previous = [] if fresh or not self.path.exists() else io.read_json(self.path)["sessions"]
        self.session = {**_provenance(device), **world, "started": now(), "ended": None,
                        "ended_as": None}
        self.sessions = previous + [self.session]
        self.write()

    def end(self, how: str) -> None:
        self.session.update(ended=now(), ended_as=how)
        self.write()

    def write(self) -> None:
        io.write_json(self.path, {"sessions": self.sessions})


_CHECKPOINT_KEYS = {"model", "epoch", "status", "history", "alignment", "best", "best_model"}


def _resume_point(out: RunFolder, config: dict, restart: bool, restart_on_change: bool) -> dict | None:
    """The checkpoint to resume from, if ``out`` holds one of this same config."""
    last = out / out.LAST
    if restart:
        out.clear()
        return None
    if not (out / out.CONFIG).exists():
        return None
    if out.read_config(validate=False) != config:
        if not restart_on_change:
            raise RunError(f"{out} holds a run with a different config; delete the folder, "
                           "choose another --out, or pass --restart-on-change")
        log.info("%s: the config changed, starting the run afresh", out)
        out.clear()
        return None
    if not last.exists():
        return None
    state = out.load_checkpoint(out.LAST)
    if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= set(state):
        raise CheckpointError(f"{last} is not a biofa training checkpoint; {out.restart_hint()}")
    return state


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """``pandas.DataFrame(rows, columns).to_csv(index=False)``, byte for byte, without pandas
    (whose import is a third of a second of every training job).

    Columns are ``columns`` or the rows' keys in the order they first appear; a missing
    key or None is an empty cell. Each column is written as pandas infers its type: all
    booleans or all integers as they are, numbers with a gap or a float among them as
    floats (``repr``, so ``1`` becomes ``1.0``), anything else as text.
    """
    import csv
    from io import StringIO

    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        return "\n"
    cells = [_csv_column([row.get(column) for row in rows]) for column in columns]
    text = StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*cells))
    return text.getvalue()


def _csv_column(values: list) -> list[str]:
    def missing(value) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not any(missing(v) for v in values):
        if all(isinstance(v, bool) for v in values) or all(
                isinstance(v, int) and not isinstance(v, bool) for v in values):
            return [str(v) for v in values]
    if all(missing(v) or number(v) for v in values):
        return ["" if missing(v) else repr(float(v)) for v in values]
    return ["" if missing(v) else str(v) for v in values]


def _write_outputs(out: RunFolder, state: dict) -> None:
    """Every output file from the checkpoint's record (so deleted outputs come back)."""
    io.write_text(out / out.METRICS, csv_text(state["history"], METRICS_COLUMNS))
    io.write_text(out / out.ALIGNMENT, csv_text(state["alignment"]))
    if state["best_model"] is not None and not (out / out.BEST).exists():
        io.save_torch(out / out.BEST, {"model": state["best_model"], **state["best"]})
    status = {**state["status"], "best_epoch": state["best"]["epoch"],
              "best_val_acc1": state["best"]["val_acc1"]}
    io.write_json(out / out.STATUS, status)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s")


def train(config: dict, out: str | Path, restart_on_change: bool = False,
          restart: bool = False, evaluate: tuple[str, ...] = ()) -> dict:
    """Train as ``config`` says into ``out``; resumes from ``out/last.pt``. Returns the status.

    One process at a time per folder (a lock); a stop signal (:data:`STOP_SIGNALS`)
    writes a mid-epoch checkpoint and raises :class:`Stopped`, and the same call then
    continues from that step with the numbers of an uninterrupted run. ``restart``
    discards what ``out`` holds (e.g. a corrupted checkpoint) and starts afresh.

    Under torchrun the processes train the run together (:mod:`biofa.study.distributed`):
    ``batch_size`` is the global batch, rank 0 holds the lock, validates, measures
    alignment and writes every file, and a stop signal to any rank stops every rank at
    the same step. A run resumes with the number of processes it stopped with, or with
    another one after a completed epoch.

    ``evaluate``: splits (of :data:`RunFolder.EVALUATIONS`) whose evaluation of the best
    checkpoint, ``out/<split>.json``, is written once training has ended, in this process
    and under the lock, as ``biofa evaluate DIR --split SPLIT`` writes it
    (:func:`biofa.study.evaluate.evaluate`). A run that was already finished when called
    writes only the evaluations that are missing.
    """
    bad = [split for split in evaluate if split not in RunFolder.EVALUATIONS]
    if bad:
        raise RunError(f"cannot evaluate on {', '.join(map(repr, bad))}; the splits are "
                       f"{', '.join(RunFolder.EVALUATIONS)}")
    out = RunFolder(out)
    device = resolve_device(config["device"])
    world = World.from_environment(device)
    try:
        with out.lock() if world.is_main else nullcontext(), _stop_on_signals() as signals:
            world.barrier()  # the other ranks start once rank 0 holds the folder
            trained = _train(config, out, restart_on_change, restart, signals, device, world)
            if world.is_main:
                for split in dict.fromkeys(evaluate):
                    if trained or not (out / out.evaluation(split)).exists():
                        evaluate_split(out.path, split=split, device=config["device"])
            world.barrier()
            return io.read_json(out / out.STATUS)
    finally:
        world.close()


def _train(config: dict, out: RunFolder, restart_on_change: bool, restart: bool,
           signals: list[int], device: torch.device, world: World) -> bool:
    """Whether this call trained (False when the run was finished already)."""
    last = _resume_point(out, config, restart, restart_on_change) if world.is_main else None
    where = world.broadcast(None if last is None else last["status"]["status"])
    if where is not None and where != "running":
        if world.is_main:
            _write_outputs(out, last)  # finished: only restore what may have been deleted
        return False
    if where is not None and not world.is_main:
        last = out.load_checkpoint(out.LAST)
    if last is not None:
        _check_world(out, last, world)
    batch_size = per_process_batch(config["batch_size"], world)

    set_runtime(config)
    seed_everything(config["seed"])
    data = loaders(config["dataset"], config["data_root"], batch_size,
                   workers=config["workers"], seed=config["seed"],
                   eval_batch_size=config["eval_batch_size"], device=device,
                   shard=(world.rank, world.size))
    model = build_model(config, device)  # the same on every rank: one seed so far
    if world.size > 1:  # from here on the ranks draw apart (augmentation, dropout)
        seed_everything(config["seed"] * 1_000_003 + 7919 * (world.rank + 1))
        parallel = data_parallel(model, device_ids=[device] if device.type == "cuda" else None,
                                 sync_batchnorm=config["sync_batchnorm"])
        model = parallel.module
    fixed = fixed_state(model)  # shared by the model and its best epoch's snapshot
    optimizer = make_optimizer(config, model)
    scheduler = make_scheduler(config, optimizer)
    stepped = step_model(parallel if world.size > 1 else model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config["amp"] and device.type == "cuda")
    probe = (alignment_batch(data["val"], config["alignment_batch"], device, config["channels_last"])
             if world.is_main else None)

    partial = None
    if last is not None:
        model.load_state_dict(last["model"])
        if "chores" in last:  # e.g. the weight constraint validation already applied
            restore_step_chores(model, last["chores"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        scaler.load_state_dict(last["scaler"])
        ranks_rng = last.get("ranks_rng") or [last["rng"]]
        if len(ranks_rng) == world.size:
            set_rng_state(ranks_rng[world.rank])
        elif world.is_main:  # another number of processes: the others keep their fresh seeds
            set_rng_state(last["rng"])
        state = {key: last[key] for key in ("history", "alignment", "best", "best_model", "status")}
        if state["best_model"] is not None:  # fixed since the start: the model's own
            current = model.state_dict()
            state["best_model"] = {**state["best_model"], **{key: current[key] for key in fixed}}
        partial = last.get("partial")
        if partial is not None:
            partial = {**partial, "rng": ranks_rng[world.rank]}
            if not world.is_main:  # rank 0's totals are every rank's, summed at the stop
                partial.update(totals=torch.zeros_like(partial["totals"]), n=0)
            log.info("resuming %s in epoch %d at step %d/%d", out, partial["epoch"],
                     partial["batches"] + 1, len(data["train"]))
        else:
            log.info("resuming %s after epoch %d", out, last["epoch"])
    else:
        state = {"history": [], "alignment": [], "best": {"epoch": 0, "val_acc1": -1.0},
                 "best_model": None, "status": {"status": "running", "epoch": 0}}
        if world.is_main:
            io.write_yaml(out / out.CONFIG, config)
            state["alignment"] = alignment_rows(model, 0, probe)
            io.save_torch(out / out.BEST, {"model": model.state_dict(), **state["best"]})
    spread = world.describe(device)
    record = _Record(out, device, last is None, spread) if world.is_main else None

    def checkpoint(epoch: int, **extra) -> None:
        states = world.gather(rng_state())  # every rank's, to resume each where it was
        if world.is_main:
            io.save_torch(out / out.LAST, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": states[0], "ranks_rng": states, "world_size": world.size,
                "chores": step_chores(model), "epoch": epoch,
                **state, **extra})

    def stop(where: str) -> Stopped:
        signum = signals[0] if signals else signal.SIGTERM  # or it came to another rank
        name = signal.Signals(signum).name if signals else "a signal to another process"
        if record is not None:
            record.end(f"stopped by {name}")
        return Stopped(f"{out}: stopped by {name} {where}; {out / out.LAST} resumes it: run the "
                       "same command again", signum)

    epoch_seconds: list[float] = []
    try:
        for epoch in range(state["status"]["epoch"] + 1, config["epochs"] + 1):
            if world.any(bool(signals)):  # came while the previous epoch was validated
                raise stop(f"after epoch {epoch - 1}")
            started = time.perf_counter()
            # resumable shuffles and worker seeds, each rank's own
            data["train"].generator.manual_seed(
                (config["seed"] * 1_000_003 + epoch) * world.size + world.rank)
            if isinstance(data["train"].sampler, DistributedSampler):
                data["train"].sampler.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            earlier = partial["seconds"] if partial else 0.0  # spent before a mid-epoch stop
            fit = train_epoch(stepped, data["train"], optimizer, scaler, device, config,
                              desc=f"epoch {epoch}/{config['epochs']}", partial=partial,
                              stop=lambda: world.any(bool(signals)), world=world)
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
            done = epoch == config["epochs"]
            if world.is_main:  # measured once; the other ranks wait in checkpoint()
                val = _validate_and_record(model, data, probe, state, epoch, fit, lr, fixed, out,
                                           config, device, earlier + time.perf_counter() - started)
            state["status"] = {"status": "complete" if done else "running", "epoch": epoch}
            checkpoint(epoch)
            if world.is_main:
                _write_outputs(out, state)
                epoch_seconds.append(time.perf_counter() - started)
                eta = sum(epoch_seconds) / len(epoch_seconds) * (config["epochs"] - epoch)
                log.info("epoch %d/%d  train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% | lr "
                         "%.3g | %.1fs | eta %s", epoch, config["epochs"], fit["loss"],
                         100 * fit["acc1"], val["loss"], 100 * val["acc1"], lr,
                         state["history"][-1]["seconds"], _duration(eta))
        if state["status"]["status"] == "diverged" and world.is_main:
            _record_divergence(out, state)
    except Stopped:
        raise
    except BaseException as error:
        if record is not None:
            record.end(f"failed: {type(error).__name__}")
        raise
    if record is not None:
        record.end(state["status"]["status"])
    return True


def _validate_and_record(model, data, probe, state: dict, epoch: int, fit: dict, lr: float,
                         fixed: set[str], out: RunFolder, config: dict, device,
                         seconds: float) -> dict:
    """Validate after an epoch, measure alignment, and keep the epoch in ``state`` (its
    history row; its weights, in ``state`` and best.pt, if they are the best so far)."""
    val = evaluate_model(model, data["val"], device, config["amp"], config["channels_last"])
    state["alignment"] += alignment_rows(model, epoch, probe)
    state["history"].append({
        "epoch": epoch, "train_loss": fit["loss"], "train_acc1": fit["acc1"],
        "train_acc5": fit["acc5"], "val_loss": val["loss"], "val_acc1": val["acc1"],
        "val_acc5": val["acc5"], "lr": lr, "seconds": round(seconds, 3)})
    if val["acc1"] > state["best"]["val_acc1"]:
        state["best"] = {"epoch": epoch, "val_acc1": val["acc1"]}
        state["best_model"] = _snapshot(model, fixed)
        io.save_torch(out / out.BEST, {"model": state["best_model"], **state["best"]})
    return val


def _check_world(out: RunFolder, last: dict, world: World) -> None:
    """Refuse to continue a stopped epoch with another number of processes: its place in
    the epoch is a step of that many processes' batches and their data order."""
    before = last.get("world_size", 1)
    if before != world.size and last.get("partial") is not None:
        raise RunError(
            f"{out} was stopped in epoch {last['partial']['epoch']} while training with {before} "
            f"process(es), and this is {world.size}: finish that epoch with {before} "
            f"(torchrun --nproc-per-node {before}, or plain `biofa train` for 1); after a "
            "completed epoch any number of processes can take over")


def _snapshot(model: nn.Module, fixed: set[str]) -> dict[str, torch.Tensor]:
    """``model``'s state dict as it is now, for the best epoch's weights.

    Every tensor is copied except the fixed feedback buffers (``fixed``): those are the
    model's own, not copied in memory and stored once in ``last.pt``, which holds the
    model and this snapshot (torch.save writes a shared storage once). DFA's fixed
    matrices for ResNet-18 on ImageNet are 8.7 GB: a copy would double the run's memory
    and its checkpoint.
    """
    return {key: tensor if key in fixed else tensor.detach().clone()
            for key, tensor in model.state_dict().items()}


def _record_divergence(out: RunFolder, state: dict) -> None:
    """Mark the run diverged; last.pt keeps the weights of a finite epoch, never NaNs.

    Those are last.pt's own when it was written at an epoch's end, otherwise (no epoch
    finished yet, or a mid-epoch checkpoint of the epoch that diverged) best.pt's,
    under best.pt's epoch.
    """
    kept = out.load_checkpoint(out.LAST) if (out / out.LAST).exists() else None
    if kept is None or "partial" in kept:
        best = out.load_checkpoint(out.BEST)
        kept = {"model": best["model"], "epoch": best["epoch"]}
    io.save_torch(out / out.LAST, {**kept, **state})
    _write_outputs(out, state)
