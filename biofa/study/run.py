"""One training run's folder, as one object: the names of its files, how to read them
and how to load the model it trained.

Every step that touches a run (train, evaluate, attack, collect, and the workflow's
rules) names the files through :class:`RunFolder`, so a file is renamed in one place.
Importing this module builds nothing: the model (its converter, data set and device) is
imported and built only by :meth:`RunFolder.load_model`.

    DIR/config.yaml    the resolved run config (defaults filled in)
    DIR/metrics.csv    one row per epoch: train/val loss and top-1/top-5 accuracy, lr, seconds
    DIR/alignment.csv  long format: epoch, layer, method, weight_angle, norm_ratio, gradient_angle
    DIR/best.pt        weights of the best validation epoch (epoch 0: the initial weights)
    DIR/last.pt        weights, optimiser, scheduler and RNG states after the last epoch, or
                       at the step where a stop signal came (then with its place in the epoch)
    DIR/status.json    running | complete | diverged, and the epoch reached
    DIR/run.json       each session that trained it: start, end, how it ended, versions,
                       device, host and the git commit of the working directory
    DIR/test.json      ``biofa evaluate``: test error of best.pt (val.json for the val split)
    DIR/.lock          held while a process trains into DIR
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..errors import CheckpointError, RunError, RunLocked
from . import io


def now() -> str:
    """The time as run records write it: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """The folder of one run (one model, one rule, one seed)."""

    CONFIG = "config.yaml"
    METRICS = "metrics.csv"
    ALIGNMENT = "alignment.csv"
    BEST = "best.pt"
    LAST = "last.pt"
    STATUS = "status.json"
    RECORD = "run.json"
    LOCK = ".lock"
    #: The splits ``biofa evaluate`` can write a result for, each as ``SPLIT.json``.
    EVALUATIONS = ("test", "val")
    #: What training writes besides the config (the outputs of a workflow's train rule).
    TRAINED = (BEST, METRICS, ALIGNMENT, STATUS)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def containing(cls, path: str | os.PathLike) -> RunFolder:
        """The run folder of ``path``, which may also name a file inside it (e.g. test.json)."""
        path = Path(path)
        return cls(path.parent if path.is_file() else path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @staticmethod
    def evaluation(split: str = "test") -> str:
        return f"{split}.json"

    # ------------------------------------------------------------------------- hints

    def restart_hint(self) -> str:
        return f"start the run afresh with: biofa train CONFIG --out {self.path} --restart"

    def train_hint(self) -> str:
        return f"train it first: biofa train CONFIG.yaml --out {self.path}"

    # ------------------------------------------------------------------------- reading

    def is_trained(self) -> bool:
        return (self / self.CONFIG).exists() and (self / self.BEST).exists()

    def read_config(self, validate: bool = True) -> dict:
        """The run's config; validated (defaults filled) unless ``validate`` is false."""
        path = self / self.CONFIG
        if not path.exists():
            raise RunError(f"{self.path} holds no trained run ({self.CONFIG} missing); "
                           f"{self.train_hint()}")
        if not validate:
            try:
                return yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                raise RunError(f"{path} is corrupted (not valid YAML); {self.restart_hint()}") from None
        from .config import load

        return load(path)

    def read_status(self) -> dict | None:
        path = self / self.STATUS
        return io.read_json(path) if path.exists() else None

    def read_evaluation(self, split: str = "test") -> dict:
        path = self / self.evaluation(split)
        if not path.exists():
            raise RunError(f"run {self.path} has no {path.name}; evaluate it first: "
                           f"biofa evaluate {self.path}")
        return io.read_json(path)

    def load_checkpoint(self, name: str, fix: str | None = None, map_location: Any = "cpu") -> Any:
        """A checkpoint of this run, read with ``weights_only=True`` (see :func:`io.load_torch`)."""
        return io.load_torch(self / name, fix or self.restart_hint(), map_location=map_location)

    def load_model(self, checkpoint: str = BEST, device: str = "auto"):
        """(model in eval mode, config, checkpoint dict): the weights of ``checkpoint``.

        Safe on a folder from elsewhere: a checkpoint whose pickle would run code is
        refused (:class:`biofa.errors.UntrustedCheckpoint`) and nothing in it executes.
        """
        from .device import resolve_device

        if not self.is_trained():
            raise RunError(f"{self.path} holds no trained run ({checkpoint} or {self.CONFIG} "
                           f"missing); {self.train_hint()}")
        config = self.read_config()
        config["device"] = device
        model = build_model(config, resolve_device(device))
        retrain = f"retrain it: biofa train {self / self.CONFIG} --out {self.path} --restart"
        state = self.load_checkpoint(checkpoint, retrain, map_location=next(model.parameters()).device)
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{self / checkpoint} is not a biofa checkpoint (no 'model' "
                                  f"weights); {retrain}")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            lines = str(error).splitlines()
            first = lines[1].strip() if len(lines) > 1 else str(error)
            raise CheckpointError(f"{self / checkpoint} does not hold the weights of the model that "
                                  f"{self / self.CONFIG} describes ({first}); {retrain}") from None
        return model.eval(), config, state

    # ------------------------------------------------------------------------- writing

    def clear(self) -> None:
        """Remove what training and evaluation wrote, keeping the folder (and its lock)."""
        for name in (self.LAST, *self.TRAINED, self.RECORD,
                     *(self.evaluation(split) for split in self.EVALUATIONS)):
            (self / name).unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock for the block: one training process per run folder.

        ``flock`` is released by the kernel when the process dies, however it dies, so a
        killed job never leaves a stale lock (and it works on NFS). A folder this call
        created and nothing else wrote into is removed again, so a run that fails
        before its first output leaves nothing behind.
        """
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self / self.LOCK, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLocked(f"{self.path} is being trained right now by {holder}; wait for it "
                            "to finish, or train into another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"biofa train (pid {os.getpid()} on {socket.gethostname()}, since {now()})\n")
        handle.flush()
        try:
            yield
        finally:
            if created and [p.name for p in self.path.iterdir()] == [self.LOCK]:
                (self / self.LOCK).unlink()
                self.path.rmdir()
            handle.close()


def build_model(config: dict, device="cpu"):
    """The config's model, with its data set's normalisation inside, converted to its method."""
    import torch

    from ..convert import convert
    from ..methods import get_rule
    from ..models import build
    from .data import DATASETS

    info = DATASETS[config["dataset"]]
    model = build(config["model"], num_classes=info.num_classes, in_channels=info.input_size[0],
                  normalize=(info.mean, info.std))
    options = dict(config["layer"])
    if get_rule(config["method"]).direct:  # the projections need the layers' input shapes
        options["input_size"] = info.input_size
    convert(model, config["method"], **options)
    model = model.to(device)
    if config.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model
