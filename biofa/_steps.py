"""How a feedback layer finds out that an optimiser step happened, and what it does then.

An optimiser step changes a weight in place, which bumps the weight's version counter.
Each layer keeps, in a ``Versions``, the weight version at which it last did each of its
once-per-step chores (the weight constraint, the rule's refresh, rebuilding a cached B);
the first training forward pass that sees a newer version does them. No hook on the
model or the optimiser is needed, so any optimiser, gradient accumulation and
``load_state_dict`` work unchanged, with one exception handled here: fused optimisers.

A layer set up anew has its chores done (``setup`` drew B, the weight has the norm the
constraint keeps), so the first step uses what ``setup`` made.

Under torch.compile a graph cannot look at version counters (the comparison is data-
dependent control flow). A layer whose forward pass was traced says so (``traced``),
and an optimiser step then does its chores eagerly, right after the step, between two
calls of the compiled graph: the same chores on the same numbers as the next eager
forward pass would do, so a compiled run takes the steps of an eager one.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.weak import WeakTensorKeyDictionary

_watching_steps = False
#: weight -> its layer (a weak reference), for every layer with per-step chores
_layers_with_chores = WeakTensorKeyDictionary()


def _after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """After any optimiser step: count fused steps, and do the traced layers' chores.

    Every torch optimiser bumps the version counters of the parameters it updates
    except the fused ones (``fused=True``), whose kernel writes the parameters behind
    autograd's back; they are bumped here. Without this a fused step would leave
    sign-concordant B stale, brSF's magnitudes undrawn and weight constraints unapplied.
    """
    for group in optimizer.param_groups:
        if group.get("fused"):
            torch.autograd.graph.increment_version(group["params"])
    if not _layers_with_chores:
        return
    for group in optimizer.param_groups:
        for param in group["params"]:
            ref = _layers_with_chores.get(param)
            layer = ref() if ref is not None else None
            if layer is not None and layer.traced and layer.training:
                catch_up(layer, stepped=True)


def watch_steps() -> None:
    """Register ``_after_step`` with torch, once per process.

    torch offers the hook only globally (for every optimiser in the process), so it is
    registered when the first feedback layer starts keeping versions, not at import:
    a program that imports biofa and never makes a layer keeps its optimisers untouched.
    """
    global _watching_steps
    if not _watching_steps:
        register_optimizer_step_post_hook(_after_step)
        _watching_steps = True


def keep(layer: nn.Module) -> None:
    """Start the bookkeeping of a layer whose rule was just set up: its chores count as
    done now (``setup`` drew B, the weight has the norm the constraint keeps)."""
    versions = layer.versions
    versions.refreshed = versions.constrained = layer.weight._version
    register(layer)


def register(layer: nn.Module) -> None:
    """Let optimiser steps find ``layer`` from its weight, should its forward be traced
    (a layer set up, copied or unpickled passes here)."""
    if layer._step_chores:
        _layers_with_chores[layer.weight] = weakref.ref(layer)
    else:
        _layers_with_chores.pop(layer.weight, None)


class Versions:
    """The weight version at which each per-step chore of a layer was last done.

    Set after every optimiser step, so kept in plain slots: ``nn.Module.__setattr__``
    costs more than the chores themselves on a small model.
    """

    __slots__ = ("constrained", "refreshed", "feedback")

    def __init__(self) -> None:
        # every layer that keeps versions, made, copied or unpickled, passes here
        watch_steps()
        self.constrained = self.refreshed = self.feedback = None

    def __reduce__(self):
        # a copied or loaded layer has new tensors with their own counters: start afresh
        return Versions, ()


def catch_up(layer: nn.Module, stepped: bool = False) -> None:
    """Apply the weight constraint and refresh B once after each optimiser step.

    Called at every eager forward pass of a layer whose rule refreshes or that
    constrains its weights, and right after a step (``stepped``) for a traced one;
    returns at once when the weight has not changed since the chores were last done
    (the common case) or inside ``frozen_feedback``. The refresh waits for a training
    pass with gradients enabled (never in evaluation, or for an attack's gradient).
    """
    version, done = layer.weight._version, layer.versions
    if version == done.refreshed or layer.frozen:
        return
    if layer.constrain_weights and version != done.constrained:
        with torch.no_grad():
            layer.weight.mul_(layer.initial_weight_norm / layer.weight.norm())
        version = done.constrained = layer.weight._version
    if layer.training and (stepped or torch.is_grad_enabled()) and version != done.refreshed:
        layer.rule.refresh(layer)
        done.refreshed = version



def chores_done(layer: nn.Module) -> list[bool]:
    """[constrained, refreshed]: whether each chore is done for the weight as it is now.

    A checkpoint keeps these, because loading the weights bumps their version: without
    them a resumed run would apply the weight constraint again to a W that validation's
    forward pass had already constrained (a rescale by a ratio within an ulp of 1, which
    the steps after it amplify).
    """
    version, done = layer.weight._version, layer.versions
    return [done.constrained == version, done.refreshed == version]


def restore_chores(layer: nn.Module, state: list[bool]) -> None:
    """After loading the weights ``chores_done`` was taken with: the same chores done."""
    constrained, refreshed = state
    version = layer.weight._version
    if constrained:
        layer.versions.constrained = version
    if refreshed:
        layer.versions.refreshed = version
