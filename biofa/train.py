"""``biofa train CONFIG --out DIR``: one model, one learning rule, one seed.

Reads top to bottom: set up, resume if DIR holds a checkpoint, then per epoch train,
validate, measure alignment and write every output atomically. Files in DIR:

    config.yaml     the resolved config (defaults filled in)
    metrics.csv     one row per epoch: train/val loss and top-1/top-5 accuracy, lr, seconds
    alignment.csv   long format: epoch, layer, method, weight_angle, norm_ratio, gradient_angle
    best.pt         weights of the best validation epoch (epoch 0: the initial weights)
    last.pt         weights, optimiser, scheduler and RNG states after the last epoch
    status.json     running | complete | diverged, and the epoch reached
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import io, metrics
from .errors import ConfigError, RunError
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
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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


def train_epoch(model, loader, optimizer, scaler, device, config, desc="") -> dict:
    model.train()
    use_amp = config["amp"] and device.type == "cuda"
    totals, n = torch.zeros(3, device=device), 0
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty()):
        x, y = _inputs(x, device, config["channels_last"]), y.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n += _accumulate(totals, logits, y, loss)
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

def _resume_point(out: Path, config: dict, restart_on_change: bool) -> dict | None:
    """The checkpoint to resume from, if ``out`` holds one of this same config."""
    saved, last = out / "config.yaml", out / "last.pt"
    if not saved.exists():
        return None
    import yaml
    if yaml.safe_load(saved.read_text()) != config:
        if not restart_on_change:
            raise RunError(f"{out} holds a run with a different config; delete the folder, "
                           "choose another --out, or pass --restart-on-change")
        print(f"{out}: the config changed, starting the run afresh", file=sys.stderr)
        last.unlink(missing_ok=True)
        return None
    return torch.load(last, map_location="cpu", weights_only=False) if last.exists() else None


def _write_outputs(out: Path, state: dict) -> None:
    """Every output file from the checkpoint's record (so deleted outputs come back)."""
    io.write_csv(out / "metrics.csv", pd.DataFrame(state["history"], columns=METRICS_COLUMNS))
    io.write_csv(out / "alignment.csv", pd.DataFrame(state["alignment"]))
    if state["best_model"] is not None and not (out / "best.pt").exists():
        io.save_torch(out / "best.pt", {"model": state["best_model"], **state["best"]})
    status = {**state["status"], "best_epoch": state["best"]["epoch"],
              "best_val_acc1": state["best"]["val_acc1"]}
    io.write_json(out / "status.json", status)


METRICS_COLUMNS = ["epoch", "train_loss", "train_acc1", "train_acc5", "val_loss", "val_acc1",
                   "val_acc5", "lr", "seconds"]


def train(config: dict, out: str | Path, restart_on_change: bool = False) -> dict:
    """Train as ``config`` says into ``out``; resumes from ``out/last.pt``. Returns the status."""
    out = Path(out)
    last = _resume_point(out, config, restart_on_change)
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

    if last is not None:
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        scaler.load_state_dict(last["scaler"])
        set_rng_state(last["rng"])
        state = {key: last[key] for key in ("history", "alignment", "best", "best_model", "status")}
        print(f"resuming {out} after epoch {last['epoch']}", file=sys.stderr)
    else:
        out.mkdir(parents=True, exist_ok=True)
        io.write_yaml(out / "config.yaml", config)
        state = {"history": [], "alignment": alignment_rows(model, 0, probe),
                 "best": {"epoch": 0, "val_acc1": -1.0}, "best_model": None,
                 "status": {"status": "running", "epoch": 0}}
        io.save_torch(out / "best.pt", {"model": model.state_dict(), **state["best"]})

    def checkpoint(epoch: int) -> None:
        io.save_torch(out / "last.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "epoch": epoch, **state})

    for epoch in range(state["status"]["epoch"] + 1, config["epochs"] + 1):
        started = time.perf_counter()
        data["train"].generator.manual_seed(config["seed"] * 1_000_003 + epoch)  # resumable shuffles
        lr = optimizer.param_groups[0]["lr"]
        fit = train_epoch(model, data["train"], optimizer, scaler, device, config,
                          desc=f"epoch {epoch}/{config['epochs']}")
        scheduler.step()
        if not math.isfinite(fit["loss"]):
            print(f"{out}: diverged in epoch {epoch}; keeping the best epoch "
                  f"{state['best']['epoch']}", file=sys.stderr)
            state["status"] = {"status": "diverged", "epoch": epoch,
                               "reason": f"training loss became {fit['loss']} in epoch {epoch}"}
            break
        val = evaluate_model(model, data["val"], device, config["amp"], config["channels_last"])
        state["alignment"] += alignment_rows(model, epoch, probe)
        state["history"].append({
            "epoch": epoch, "train_loss": fit["loss"], "train_acc1": fit["acc1"],
            "train_acc5": fit["acc5"], "val_loss": val["loss"], "val_acc1": val["acc1"],
            "val_acc5": val["acc5"], "lr": lr, "seconds": round(time.perf_counter() - started, 3)})
        if val["acc1"] > state["best"]["val_acc1"]:
            state["best"] = {"epoch": epoch, "val_acc1": val["acc1"]}
            state["best_model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            io.save_torch(out / "best.pt", {"model": state["best_model"], **state["best"]})
        done = epoch == config["epochs"]
        state["status"] = {"status": "complete" if done else "running", "epoch": epoch}
        checkpoint(epoch)
        _write_outputs(out, state)
        print(f"epoch {epoch}/{config['epochs']}  train loss {fit['loss']:.4f} "
              f"acc {fit['acc1']:.2%} | val loss {val['loss']:.4f} acc {val['acc1']:.2%} "
              f"| lr {lr:.3g} | {state['history'][-1]['seconds']:.1f}s", file=sys.stderr)
    if state["status"]["status"] == "diverged":
        if (out / "last.pt").exists():  # record the end; weights stay those of the last good epoch
            last = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
            last["status"] = state["status"]
            io.save_torch(out / "last.pt", last)
        else:
            checkpoint(0)
        _write_outputs(out, state)
    return io.read_json(out / "status.json")
