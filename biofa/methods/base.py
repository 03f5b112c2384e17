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


def check_init(scheme: str | None) -> None:
    """Refuse an ``init`` option that is neither None nor one of ``INITS``, naming them."""
    if scheme is not None and scheme not in INITS:
        raise _unknown_init(scheme)


def _unknown_init(scheme) -> UsageError:
    return UsageError(f"unknown init {scheme!r}; valid inits: {', '.join(INITS)}")


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
    raise _unknown_init(scheme)


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


class Rule:
    """Base class of a learning rule: what B is, how it is built, refreshed and updated.

    One instance per layer; what the rule keeps between steps lives on the layer (as
    buffers or Parameters, so it moves with ``.to()`` and is saved in the state dict).
    A new rule is a subclass that sets ``name`` and ``paper`` and overrides the hooks it
    needs: one module in ``biofa/methods`` with an entry in ``METHODS``
    (``biofa/methods/__init__.py``), or, outside biofa, a class given to
    ``biofa.methods.register`` or named by a ``biofa.methods`` entry point
    (docs/write-a-rule.md). The layer calls the hooks:

    * ``setup(layer)``: once, when the layer takes the rule; register B here (a buffer,
      or a Parameter when B learns). ``layer.weight`` and ``layer.init_scheme`` (the
      distribution to draw from, see ``draw``) are set.
    * ``feedback(layer)``: at every forward pass that records the rule's backward, the
      matrix that carries the error to the layer below, same shape as the weight;
      ``None`` sends no error (DFA's hidden layers get theirs straight from the output).
    * ``refresh(layer)``: once after every optimisation step, at the next training
      forward pass with gradients enabled, or right after the step when the layer runs
      in a torch.compile graph (``biofa._steps``). brSF redraws its magnitudes here,
      into buffers. Never during evaluation or inside ``biofa.frozen_feedback``.
    * ``after_forward(layer, x, out)``: a last look at the forward pass (DFA's hub).
    * ``teardown(layer)``: remove what ``setup`` registered.

    Class attributes say how B is updated, what shape it has and whether a custom
    backward is needed: ``learns_feedback``, ``fixed_buffers``, ``direct`` and
    ``plain_backward``.
    """

    name = ""
    paper = ""
    #: B is a Parameter that the training optimiser learns: its gradient is the weight's
    #: (Kolen-Pollack), or for a direct rule the output error times the layer's input
    #: (Direct Kolen-Pollack). A B that the rule itself updates (Weight Mirror) is not.
    learns_feedback = False
    #: Buffers that ``setup`` draws and nothing changes afterwards (FA's and DFA's B,
    #: frSF's magnitudes): a snapshot of the model may share them instead of copying.
    fixed_buffers: tuple[str, ...] = ()
    #: The error goes down through W itself, so torch's own backward does the job
    #: (backpropagation). The layer's attribute of the same name decides per pass.
    plain_backward = False
    #: B carries the output of the network straight to the layer's input (DFA and its
    #: kin): ``biofa.convert`` wires the layers to one hub, takes the options of
    #: ``biofa.convert.DFA_OPTIONS``, and B is not shaped like W (no angle(W, B)).
    direct = False

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
