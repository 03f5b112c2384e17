"""Atomic file writes: a killed job never leaves a truncated file that looks complete.

Each writer fills a temporary file in the target's folder and renames it over the
target (``os.replace`` is atomic on POSIX), so readers see the old file or the new
one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..errors import CheckpointError, RunError, UntrustedCheckpoint

def _umask() -> int:
    """The process's umask, read without changing it (Linux reports it in /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write to; renamed to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_yaml(path: str | Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_csv(path: str | Path, frame) -> None:
    """Write a pandas DataFrame as CSV."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically; a full disk leaves the previous file as it was.

    Save only tensors and plain Python values: :func:`load_torch` refuses anything else.
    """
    import torch

    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise RunError(f"no space left on the device while writing {path} "
                       f"({os.strerror(error.errno)}); {'the previous file is intact; ' if Path(path).exists() else ''}"
                       "free some space and run the same command again") from None


def load_torch(path: str | Path, fix: str, map_location: Any = "cpu") -> Any:
    """A checkpoint's contents, loaded with ``weights_only=True``: never runs its pickle's code.

    A checkpoint is data that travels (a colleague's run folder, a model shared with a
    paper), and an ordinary pickle can call any function while it loads. Refused files
    raise :class:`UntrustedCheckpoint` (naming the code it asked for), and truncated or
    corrupted ones :class:`CheckpointError`; both messages end with ``fix``, the way out.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; {fix}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        try:
            code = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not even a readable archive: corrupted, reported below
            code = []
        if code:
            raise UntrustedCheckpoint(
                f"refused to load {path}: its pickle asks for {', '.join(code)}, which is code, "
                f"not weights (nothing was executed; biofa loads tensors and plain values "
                f"only); {fix}") from None
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is corrupted ({reason[:120]}); {fix}") from None
    except Exception as error:  # a damaged pickle can fail in any of the unpickler's steps
        reason = str(error).split(". ")[0] if isinstance(error, RuntimeError) else type(error).__name__
        raise CheckpointError(f"{path} is truncated or corrupted ({reason[:120]}); {fix}") from None


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
