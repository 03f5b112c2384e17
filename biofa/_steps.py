"""How a feedback layer finds out that an optimiser step happened, and what it does then.

An optimiser step changes a weight in place, which bumps the weight's version counter.
Each layer keeps, in a ``Versions``, the weight version at which it last did each of its
once-per-step chores (the weight constraint, the rule's refresh, rebuilding a cached B);
the first training forward pass that sees a newer version does them. No hook on the
model or the optimiser is needed, so any optimiser, gradient accumulation and
``load_state_dict`` work unchanged, with one exception handled here: fused optimisers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

_watching_fused_steps = False


def _count_fused_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Bump the version counters of the parameters a fused optimiser just updated.

    Every torch optimiser bumps them except the fused ones (``fused=True``), whose
    kernel writes the parameters behind autograd's back. Without this a fused step would
    leave sign-concordant B stale, brSF's magnitudes undrawn and weight constraints
    unapplied.
    """
    for group in optimizer.param_groups:
        if group.get("fused"):
            torch.autograd.graph.increment_version(group["params"])


def watch_fused_steps() -> None:
    """Register ``_count_fused_step`` with torch, once per process.

    torch offers the hook only globally (for every optimiser in the process), so it is
    registered when the first feedback layer starts keeping versions, not at import:
    a program that imports biofa and never makes a layer keeps its optimisers untouched.
    """
    global _watching_fused_steps
    if not _watching_fused_steps:
        register_optimizer_step_post_hook(_count_fused_step)
        _watching_fused_steps = True


class Versions:
    """The weight version at which each per-step chore of a layer was last done.

    Set after every optimiser step, so kept in plain slots: ``nn.Module.__setattr__``
    costs more than the chores themselves on a small model.
    """

    __slots__ = ("constrained", "refreshed", "feedback")

    def __init__(self) -> None:
        # every layer that keeps versions, made, copied or unpickled, passes here
        watch_fused_steps()
        self.constrained = self.refreshed = self.feedback = None

    def __reduce__(self):
        # a copied or loaded layer has new tensors with their own counters: start afresh
        return Versions, ()


def catch_up(layer: nn.Module) -> None:
    """Apply the weight constraint and refresh B once after each optimiser step.

    Called at every forward pass of a layer whose rule refreshes or that constrains its
    weights; returns at once when the weight has not changed since the last training
    pass (the common case) or inside ``frozen_feedback``.
    """
    version, done = layer.weight._version, layer.versions
    if version == done.refreshed or layer.frozen:
        return
    if layer.constrain_weights and version != done.constrained:
        with torch.no_grad():
            layer.weight.mul_(layer.initial_weight_norm / layer.weight.norm())
        version = done.constrained = layer.weight._version
    if layer.training and torch.is_grad_enabled() and version != done.refreshed:
        layer.rule.refresh(layer)
        done.refreshed = version

