"""Which device a job runs on: ``auto`` takes a GPU no other biofa job on this machine holds."""

from __future__ import annotations

import torch

from ..errors import ConfigError

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
