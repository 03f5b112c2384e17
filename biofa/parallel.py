"""Data-parallel training of biofa models: torch's ``DistributedDataParallel``, set up for
the rules.

Every rule works under plain DDP: the rules' B are drawn at conversion from torch's
generator (so ranks seeded alike before building the model hold the same B), derived from
W (the sign rules), redrawn from a stream of the layer's own (brSF), or learned as
Parameters whose gradients DDP averages with W's (Kolen-Pollack). DFA's output error is
projected on each rank and only the weight gradients are reduced. N processes with
batch b therefore take the steps one process takes with batch N·b.

:func:`data_parallel` adds what DDP cannot know: the feedback buffers are identical on
every rank by construction, so it checks that once and tells DDP not to broadcast them
(DFA's for ResNet-18 on ImageNet are 8.7 GB, which DDP would otherwise send at
construction, and the sign rules' B at every forward pass)::

    torch.distributed.init_process_group("nccl")        # under torchrun
    torch.manual_seed(seed)                              # the same on every rank
    model = biofa.convert(resnet18(), "brsf").to(device)
    model = biofa.parallel.data_parallel(model, device_ids=[device.index])
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import _steps
from .errors import UsageError
from .layers import buffer_names, feedback_layers


def feedback_buffers(model: nn.Module, derived: bool = True) -> list[str]:
    """Names of the buffers the rules of ``model``'s biofa layers keep (B, brSF's
    magnitudes and stream), as ``model.named_buffers()`` names them; with ``derived``
    also the caches rebuilt from those and W (the sign rules' B), which are not saved."""
    return buffer_names(model, lambda layer, buffer: buffer not in _PLAIN_BUFFERS and (
        derived or buffer not in layer._non_persistent_buffers_set))


#: Buffers of torch's own layers or of the weight constraint, not of a rule.
_PLAIN_BUFFERS = ("initial_weight_norm",)


def check_same_feedback(model: nn.Module, group=None) -> None:
    """Raise unless every rank of ``group`` holds the same feedback buffers.

    Compares a checksum per buffer (its sum and the sum of its squares, in float64), so
    the cost is one pass over the buffers and one small all-gather. Ranks that differ
    were seeded differently before the model was built.
    """
    names = feedback_buffers(model, derived=False)
    if not names:
        return
    buffers = dict(model.named_buffers())
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" \
        else torch.device("cpu")
    mine = torch.stack([torch.stack([buffers[name].double().sum(), buffers[name].double().square().sum()])
                        .to(device) for name in names])
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, mine, group=group)
    for rank, theirs in enumerate(every):
        if not torch.equal(theirs, mine):
            differ = [names[i] for i in range(len(names)) if not torch.equal(theirs[i], mine[i])]
            raise UsageError(
                f"rank {rank} holds other feedback buffers than rank {dist.get_rank(group)} "
                f"({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}): seed torch the "
                "same way on every rank before building and converting the model, and seed "
                "the ranks apart (data augmentation, dropout) only afterwards")


def data_parallel(model: nn.Module, device_ids=None, *, sync_batchnorm: bool = False,
                  check: bool = True, **options) -> DistributedDataParallel:
    """``model`` in ``DistributedDataParallel`` (``options`` are DDP's), feedback buffers
    checked alike on every rank (``check``) and left out of DDP's broadcasts.

    sync_batchnorm: replace the model's batch norms by ``nn.SyncBatchNorm`` (statistics
        over the whole global batch, as one process with that batch computes them);
        torch supports it on GPUs only. Without it each rank normalises by its own
        batch, and DDP gives every rank rank 0's running statistics at each forward pass.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise UsageError("data_parallel needs a process group: call "
                         "torch.distributed.init_process_group first (torchrun sets its environment)")
    if sync_batchnorm:
        if any(p.device.type == "cpu" for p in model.parameters()):
            raise UsageError("sync_batchnorm needs the model on GPUs (torch's SyncBatchNorm "
                             "does not run on the CPU); leave it off for CPU runs")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if check:
        check_same_feedback(model)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, feedback_buffers(model))
    layers = [layer for _, layer in feedback_layers(model)]
    up_to_date = [layer.weight._version == layer.versions.refreshed for layer in layers]
    wrapped = DistributedDataParallel(model, device_ids=device_ids, **options)
    for layer, done in zip(layers, up_to_date):
        # DDP's broadcast of rank 0's weights bumped their version counters. That is not an
        # optimiser step: chores done before it stay done (the first step uses what setup
        # drew, brSF's first M); chores due before it (a loaded checkpoint) stay due.
        if done:
            _steps.keep(layer)
    return wrapped


__all__ = ["data_parallel", "feedback_buffers", "check_same_feedback"]
