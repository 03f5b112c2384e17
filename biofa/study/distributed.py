"""How a ``biofa train`` process takes part in its run: alone, or as one rank of several.

Under ``torchrun`` (one node, or one per node under ``srun``) each process is one rank of
torch.distributed's process group, set up from torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...): NCCL between GPUs, gloo on CPUs.
The model trains in ``biofa.parallel.data_parallel``; everything else in the training
loop asks its :class:`World`: rank 0 writes, the ranks agree on stopping, sum their
training totals and hand their RNG states to rank 0's checkpoint. A process started
without torchrun is rank 0 of 1, and every call here is then free.

Control messages (stop flags, totals, RNG states, barriers) go through a gloo group even
when gradients go through NCCL: they are a few bytes on the CPU, and gloo's barrier does
not occupy a GPU stream.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import ConfigError


class World:
    """This process's rank among the processes training one run."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0,
                 backend: str | None = None, control=None):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.backend, self.control = backend, control

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device, timeout_minutes: float = 60) -> "World":
        """The world torchrun's environment describes, its process group started; rank 0
        of 1 without one. ``device`` is this rank's (its type picks the backend).

        The timeout bounds every wait: the ranks wait at a barrier while rank 0 alone
        validates and measures alignment after each epoch.
        """
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1, but this torch has no torch.distributed")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = timedelta(minutes=timeout_minutes)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timeout,
                                    device_id=device if device.type == "cuda" else None)
        control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                   backend, control)

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank must ask, at the same step)."""
        if self.size == 1:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control)
        return bool(value.item())

    def sum(self, totals: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
        """``totals`` and the count ``n`` summed over the ranks."""
        if self.size == 1:
            return totals, n
        both = torch.cat([totals.detach().double().cpu(), torch.tensor([float(n)], dtype=torch.float64)])
        dist.all_reduce(both, group=self.control)
        return both[:-1].to(totals.dtype).to(totals.device), int(both[-1].item())

    def gather(self, value) -> list:
        """Every rank's ``value`` (tensors and plain values), in rank order, on every rank."""
        if self.size == 1:
            return [value]
        values = [None] * self.size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier(group=self.control)

    def describe(self, device: torch.device) -> dict:
        """How the run is spread, for run.json: world size, backend, each rank's device."""
        devices = self.gather(f"{os.uname().nodename}:{device}")
        return {"world_size": self.size, "backend": self.backend, "devices": devices}


def per_process_batch(batch_size: int, world: World) -> int:
    """The batch of each process: ``batch_size`` is the global batch, the one a single
    process takes, so a learning rate means the same whatever the number of processes."""
    if batch_size % world.size:
        raise ConfigError(
            f"config key 'batch_size': {batch_size} is the global batch and must divide among "
            f"the {world.size} processes; make it a multiple of {world.size} or change "
            "--nproc-per-node")
    return batch_size // world.size

