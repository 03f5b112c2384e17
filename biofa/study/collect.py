"""Gather what ``biofa train``, ``evaluate`` and ``attack`` wrote into tidy frames.

:func:`collect_runs` reads run folders and :func:`collect_attacks` attack CSVs; the
tables and figures work from these frames (CSV on disk), never from run folders.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..errors import UsageError
from ..methods import PAPER_METHODS
from . import io
from .names import ACCURACY_COLUMNS, ATTACK_COLUMNS, KEYS, RUN_TABLES, TEXT_COLUMNS, run_keys
from .run import RunFolder


def read_csv(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A CSV as a frame; a zero-byte file is an empty frame rather than an error.

    Names stay text: pandas would otherwise read a column holding only ``true`` (the
    gradient of an attack file) as booleans.
    """
    try:
        return pd.read_csv(path, dtype={key: str for key in TEXT_COLUMNS})
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=columns or [])


def _read_run(run: RunFolder) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(accuracy row, metrics, alignment) of one run folder; clear errors for missing files."""
    if not (run / run.CONFIG).exists():
        raise UsageError(f"{run} is not a run folder (no {run.CONFIG}); {run.train_hint()}")
    config = run.read_config(validate=False)
    test = run.read_evaluation("test")
    status = run.read_status() or {"status": test.get("status", "unknown"), "epoch": math.nan}
    key = run_keys(config)
    epoch = status.get("epoch", math.nan)
    # A diverged run's status names the epoch that blew up; the ones before it are done.
    done = epoch - 1 if status.get("status") == "diverged" else epoch
    row = {**key, "status": status.get("status", "unknown"), "epochs_done": done,
           "best_epoch": status.get("best_epoch", test.get("best_epoch", math.nan)),
           "top1_error": test["top1_error"], "n_images": test["n_images"],
           "in_paper": config["method"] in PAPER_METHODS, "run_dir": str(run)}

    def keyed(name: str) -> pd.DataFrame:
        path = run / name
        frame = read_csv(path) if path.exists() else pd.DataFrame()
        frame = frame.drop(columns=[k for k in KEYS if k in frame.columns])
        for position, (column, value) in enumerate(key.items()):
            frame.insert(position, column, value)
        return frame

    return row, keyed(run.METRICS), keyed(run.ALIGNMENT)


def collect_runs(run_dirs) -> dict[str, pd.DataFrame]:
    """Tidy frames of many run folders, so tables and figures never re-read run folders.

    Returns ``accuracy`` (one row per run; ``top1_error`` is a fraction, as in test.json),
    ``training`` (metrics.csv rows) and ``alignment`` (alignment.csv rows), each keyed
    by dataset, model, optimizer, method and seed. Two folders of the same key would be
    averaged as if they were different seeds, so they are refused.
    """
    rows, training, alignment, seen = [], [], [], {}
    for path in run_dirs:
        run = RunFolder.containing(path)
        row, metrics, aligned = _read_run(run)
        key = tuple(row[k] for k in KEYS)
        if key in seen:
            raise UsageError(f"runs {seen[key]} and {run} are the same setting "
                             f"({', '.join(f'{k}={v}' for k, v in zip(KEYS, key))}); "
                             "give each seed once")
        seen[key] = run
        rows.append(row)
        training.append(metrics)
        alignment.append(aligned)

    def concat(frames):
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS)

    return {"accuracy": pd.DataFrame(rows, columns=ACCURACY_COLUMNS),
            "training": concat(training), "alignment": concat(alignment)}


def write_collected(frames: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """``out_dir``/NAME.csv for each of :data:`~biofa.study.names.RUN_TABLES`."""
    paths = []
    for name in RUN_TABLES:
        path = Path(out_dir) / f"{name}.csv"
        io.write_csv(path, frames[name])
        paths.append(path)
    return paths


def collect_attacks(csv_paths, optimizer: str | dict | None = None) -> pd.DataFrame:
    """All ``biofa attack`` CSVs in one frame (columns as ``biofa.study.names.ATTACK_COLUMNS``).

    Each row names its run's optimizer, so figures keep SGD and Adam models apart.
    ``optimizer`` (one name, or a mapping {csv path: name}) fills that column only for
    CSVs written by biofa versions that did not record it; a file without it is refused
    otherwise, since its rows would be averaged across optimizers.
    """
    frames = []
    for path in csv_paths:
        path = Path(path)
        if not path.exists():
            raise UsageError(f"attack CSV {path} does not exist; make it with biofa attack RUN_DIR "
                             f"--attack NAME --out {path}")
        frame = read_csv(path, ATTACK_COLUMNS)
        if "optimizer" not in frame.columns:
            given = optimizer.get(str(path), optimizer.get(path)) if isinstance(optimizer, dict) \
                else optimizer
            if given is None:
                raise UsageError(f"{path} does not say which optimizer trained its model; attack "
                                 "the run again, or name it: biofa report attacks --optimizer NAME")
            frame.insert(ATTACK_COLUMNS.index("optimizer"), "optimizer", given)
        missing = [c for c in ATTACK_COLUMNS if c not in frame.columns]
        if missing == ["init"]:
            raise UsageError(f"{path} does not say which init its model was trained with (biofa "
                             "records it since the initialization study); attack the run again")
        if missing:
            raise UsageError(f"{path} is not a biofa attack CSV: columns {missing} missing")
        if not frame.empty:
            frames.append(frame[ATTACK_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ATTACK_COLUMNS)


