"""``biofa evaluate DIR``: test error of a run's best-validation weights, into DIR/test.json."""

from __future__ import annotations

from pathlib import Path

from . import io
from .config import load
from .data import loaders
from .errors import CheckpointError, RunError
from .train import build_model, resolve_device


def read_run_config(run_dir: str | Path, checkpoint: str = "best.pt") -> dict:
    """The validated config of a trained run folder (its weights not loaded)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists() or not (run_dir / checkpoint).exists():
        raise RunError(f"{run_dir} holds no trained run ({checkpoint} or config.yaml missing); "
                       f"train it first: biofa train CONFIG.yaml --out {run_dir}")
    return load(run_dir / "config.yaml")


def load_run(run_dir: str | Path, checkpoint: str = "best.pt", device: str = "auto"):
    """(model in eval mode, config, checkpoint dict) of a trained run folder.

    Safe on a folder from elsewhere: the checkpoint is read with ``weights_only=True``,
    so a pickle that would run code is refused (:class:`biofa.errors.UntrustedCheckpoint`)
    and nothing in it executes.
    """
    run_dir = Path(run_dir)
    path = run_dir / checkpoint
    config = read_run_config(run_dir, checkpoint)
    config["device"] = device
    model = build_model(config, resolve_device(device))
    retrain = f"retrain it: biofa train {run_dir / 'config.yaml'} --out {run_dir} --restart"
    state = io.load_torch(path, retrain, map_location=next(model.parameters()).device)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} is not a biofa checkpoint (no 'model' weights); {retrain}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise CheckpointError(f"{path} does not hold the weights of the model that "
                              f"{run_dir / 'config.yaml'} describes ({first}); {retrain}") from None
    return model.eval(), config, state


def evaluate(run_dir: str | Path, split: str = "test", device: str = "auto") -> dict:
    """Top-1/top-5 of ``best.pt`` on ``split``; written to ``DIR/<split>.json``."""
    from .train import evaluate_model

    run_dir = Path(run_dir)
    model, config, state = load_run(run_dir, device=device)
    dev = next(model.parameters()).device
    data = loaders(config["dataset"], config["data_root"], config["batch_size"],
                   workers=config["workers"], eval_batch_size=config["eval_batch_size"], device=dev)
    result = evaluate_model(model, data[split], dev, config["amp"], config["channels_last"])
    status_path = run_dir / "status.json"
    status = io.read_json(status_path) if status_path.exists() else {"status": "unknown"}
    report = {"split": split, "n_images": result["n"], "top1_error": 1.0 - result["acc1"],
              "top1_acc": result["acc1"], "top5_acc": result["acc5"], "loss": result["loss"],
              "best_epoch": state.get("epoch", 0), "status": status["status"],
              "dataset": config["dataset"], "model": config["model"], "method": config["method"],
              "seed": config["seed"]}
    io.write_json(run_dir / f"{split}.json", report)
    return report
