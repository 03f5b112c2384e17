"""What a learning rule is: how it builds, refreshes and hands over the feedback matrix B.

A rule never touches the forward pass. The layer runs the ordinary linear or
convolution; in the backward pass the weight gradient stays the true local one
(error times the layer's own input) and only the error sent to the layer below
goes through ``rule.feedback(layer)`` instead of the weight.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from ..errors import UsageError

INITS = ("default", "kaiming", "xavier")


def fans(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of this shape, as torch.nn.init counts them."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def init_std(scheme: str, shape: torch.Size | tuple[int, ...]) -> float:
    """Standard deviation of the distribution ``scheme`` draws a weight of ``shape`` from.

    ``default`` is torch's own layer init (uniform, bound 1/sqrt(fan_in)); ``xavier`` is
    Glorot uniform (the paper's setting); ``kaiming`` is He normal for ReLU, fan-in mode.
    """
    fan_in, fan_out = fans(shape)
    if scheme == "default":
        return 1.0 / math.sqrt(3.0 * fan_in)
    if scheme == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "kaiming":
        return math.sqrt(2.0 / fan_in)
    raise UsageError(f"unknown init {scheme!r}; valid inits: {', '.join(INITS)}")


@torch.no_grad()
def fill_(scheme: str, tensor: Tensor) -> Tensor:
    """Fill ``tensor`` in place from ``scheme``'s distribution, on its own device."""
    std = init_std(scheme, tensor.shape)
    if scheme == "kaiming":
        return tensor.normal_(0.0, std)
    bound = math.sqrt(3.0) * std
    return tensor.uniform_(-bound, bound)


def draw(scheme: str, like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """A fresh tensor from ``scheme`` with ``like``'s device and dtype."""
    shape = tuple(like.shape) if shape is None else shape
    return fill_(scheme, torch.empty(shape, device=like.device, dtype=like.dtype))


class Versions:
    """The weight version at which each per-step chore of a layer was last done.

    Set after every optimiser step, so kept in plain slots: ``nn.Module.__setattr__``
    costs more than the chores themselves on a small model.
    """

    __slots__ = ("constrained", "refreshed", "feedback")

    def __init__(self) -> None:
        self.constrained = self.refreshed = self.feedback = None

    def __reduce__(self):
        # a copied or loaded layer has new tensors with their own counters: start afresh
        return Versions, ()


class Rule:
    """Base class of a learning rule; one instance per layer, state lives on the layer.

    Subclasses override the few hooks they need:

    * ``setup(layer)``: register B (a buffer, or a Parameter when B learns) on the layer.
    * ``feedback(layer)``: the matrix that carries the error to the layer below in the
      backward pass, same shape as the weight; ``None`` sends no error (DFA's hidden
      layers get theirs straight from the output).
    * ``refresh(layer)``: called once after every optimisation step, before the next
      training forward pass, with gradients enabled (brSF redraws its magnitudes here,
      into buffers).
    * ``after_forward(layer, x, out)``: a last look at the forward pass (DFA's hub).
    """

    name = ""
    paper = ""
    #: B receives the weight's gradient and so the same optimiser update (Kolen-Pollack).
    learns_feedback = False
    #: The rule needs the custom backward; False only for plain backpropagation.
    custom_backward = True

    def setup(self, layer: nn.Module) -> None:
        pass

    def feedback(self, layer: nn.Module) -> Tensor | None:
        return layer.weight

    def refresh(self, layer: nn.Module) -> None:
        pass

    def after_forward(self, layer: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        return out

    def teardown(self, layer: nn.Module) -> None:
        """Remove what ``setup`` registered, so the layer can take another rule."""
        for name in ("feedback_weight", "feedback_magnitude"):
            if name in layer._parameters:
                del layer._parameters[name]
            if name in layer._buffers:
                del layer._buffers[name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
