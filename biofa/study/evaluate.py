"""``biofa evaluate DIR``: test error of a run's best-validation weights, into DIR/test.json.

Also the measurement that training's validation shares: loss, top-1 and top-5 over a
loader, accumulated on the device with one host sync per pass.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from . import io
from .data import loaders
from .run import RunFolder


def inputs(x: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def accumulate(totals: torch.Tensor, logits, y, loss) -> int:
    """Add the batch's loss sum and top-1/top-5 hits to ``totals`` on device; return its size."""
    k = min(5, logits.shape[1])
    hits = logits.topk(k, dim=1).indices == y[:, None]
    totals += torch.stack([loss.detach().float() * y.shape[0], hits[:, 0].sum().float(),
                           hits.any(dim=1).sum().float()])
    return y.shape[0]


def summary(totals: torch.Tensor, n: int) -> dict:
    loss, top1, top5 = totals.tolist()  # the one host sync of an epoch
    return {"loss": loss / n, "acc1": top1 / n, "acc5": top5 / n, "n": n}


@torch.no_grad()
def evaluate_model(model, loader, device, amp: bool = False, channels_last: bool = False) -> dict:
    """Loss, top-1 and top-5 accuracy over a whole loader (averaged over images)."""
    model.eval()
    totals, n = torch.zeros(3, device=device), 0
    for x, y in loader:
        x, y = inputs(x, device, channels_last), y.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x)
        n += accumulate(totals, logits.float(), y, F.cross_entropy(logits.float(), y))
    return summary(totals, n)


def load_run(run_dir: str | Path, checkpoint: str = RunFolder.BEST, device: str = "auto"):
    """(model in eval mode, config, checkpoint dict) of a trained run folder.

    Safe on a folder from elsewhere: a checkpoint whose pickle would run code is refused
    (:class:`biofa.errors.UntrustedCheckpoint`) and nothing in it executes.
    """
    return RunFolder(run_dir).load_model(checkpoint, device)


def evaluate(run_dir: str | Path, split: str = "test", device: str = "auto") -> dict:
    """Top-1/top-5 of ``best.pt`` on ``split``; written to ``DIR/<split>.json``."""
    run = RunFolder(run_dir)
    model, config, state = run.load_model(device=device)
    dev = next(model.parameters()).device
    data = loaders(config["dataset"], config["data_root"], config["batch_size"],
                   workers=config["workers"], eval_batch_size=config["eval_batch_size"], device=dev)
    result = evaluate_model(model, data[split], dev, config["amp"], config["channels_last"])
    status = run.read_status() or {"status": "unknown"}
    report = {"split": split, "n_images": result["n"], "top1_error": 1.0 - result["acc1"],
              "top1_acc": result["acc1"], "top5_acc": result["acc5"], "loss": result["loss"],
              "best_epoch": state.get("epoch", 0), "status": status["status"],
              "dataset": config["dataset"], "model": config["model"], "method": config["method"],
              "optimizer": config["optimizer"]["name"], "seed": config["seed"]}
    io.write_json(run / run.evaluation(split), report)
    return report
