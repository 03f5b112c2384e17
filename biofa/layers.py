"""``Linear`` and ``Conv2d`` that learn with any rule of ``biofa.methods``.

They are subclasses of the torch layers with the same forward pass, arguments and
state; the rule only decides which matrix carries the error backwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _steps, functional
from .methods import get_rule
from .methods.base import Rule, check_init, fill_
from .errors import UsageError

#: Options every method accepts, on a layer or through ``biofa.convert``.
LAYER_OPTIONS = ("init", "gradient_clip", "constrain_weights")


def _check_clip(gradient_clip) -> float | None:
    """The one spelling of a clipping option inside biofa: None (no clipping) or c > 0.

    Users may also write False (none) and True (c = 1), as the study config allows.
    """
    if gradient_clip is None or gradient_clip is False:
        return None
    if gradient_clip is True:
        return 1.0
    if isinstance(gradient_clip, (int, float)) and gradient_clip > 0:
        return float(gradient_clip)
    raise UsageError(f"gradient_clip must be a positive number, true or null, got {gradient_clip!r}")


def redraw_parameters_(layer: nn.Module, init: str) -> None:
    """W from the ``init`` distribution, bias zero: the paper's start for every method."""
    fill_(init, layer.weight.data)
    if layer.bias is not None:
        layer.bias.data.zero_()


class FeedbackLayer:
    """What ``Linear`` and ``Conv2d`` share: the rule, its options and its bookkeeping."""

    #: No refresh of B and no weight constraint (``frozen_feedback``, for measurements).
    frozen: bool = False
    #: Whether a forward pass of this layer was traced by torch.compile (or ran under a
    #: torch.func transform): then optimiser steps do its per-step chores (``_steps``).
    traced: bool = False
    #: Whether forward passes record torch's own backward instead of the rule's. True
    #: after ``set_method`` when the rule's B is W and no clipping needs the custom
    #: backward; forced on by ``true_gradient``. Without gradients every pass is plain.
    plain_backward: bool

    def set_method(self, method: str, *, init: str | None = None, gradient_clip=None,
                   constrain_weights: bool = False, redraw_weights: bool = True):
        """Switch this layer to ``method``; returns the layer.

        init: None keeps the weights and draws B from torch's default layer init;
            ``xavier`` (the paper's setting) or ``kaiming`` redraws W and B from that
            distribution and zeroes the bias.
        gradient_clip: clamp the error entering this layer's backward to [-c, c]
            (True means c = 1).
        constrain_weights: after every optimiser step rescale W, in place, to the
            norm it had when the method was set.
        redraw_weights: False draws only B from ``init`` and keeps W and the bias
            (``biofa.convert`` redraws every W first, so that a seed gives the same
            initial weights whatever the method).
        """
        rule = get_rule(method)
        check_init(init)
        clip = _check_clip(gradient_clip)
        if getattr(self, "rule", None) is not None:
            self.rule.teardown(self)
        if init is not None and redraw_weights:
            redraw_parameters_(self, init)
        self.method, self.rule, self.init_scheme = method, rule, init or "default"
        self.gradient_clip, self.constrain_weights = clip, bool(constrain_weights)
        self._buffers.pop("initial_weight_norm", None)
        if self.constrain_weights:
            self.register_buffer("initial_weight_norm", self.weight.detach().norm())
        self.versions = _steps.Versions()
        # decided once here, not at every forward pass
        self.plain_backward = rule.plain_backward and clip is None
        # the layer's backward gives B W's gradient (KP); a direct rule's B gets its own
        # from the hub (DKP) and the layer has no B to pass
        self._learn_feedback = rule.learns_feedback and not rule.direct
        self._after_forward = (None if type(rule).after_forward is Rule.after_forward
                               else rule.after_forward)
        self._step_chores = self.constrain_weights or type(rule).refresh is not Rule.refresh
        rule.setup(self)
        _steps.keep(self)
        return self

    def __setstate__(self, state) -> None:  # copy.deepcopy, pickle
        super().__setstate__(state)
        _steps.register(self)

    def _do_step_chores(self) -> None:
        if functional.traced():  # a graph cannot see version counters: steps do them
            self.traced = True
        else:
            _steps.catch_up(self)

    def _take_over(self, module: nn.Module, method: str, options: dict):
        """This layer (made on the meta device) with ``module``'s Parameters and mode."""
        self.weight, self.bias = module.weight, module.bias
        self.train(module.training)
        return self.set_method(method, **options)

    def feedback_matrix(self) -> Tensor | None:
        """The B the backward pass uses now (None where it has no W-shaped B: the direct
        rules, dfa, drtp and dkp)."""
        with torch.no_grad():
            return self.rule.feedback(self)

    def extra_repr(self) -> str:
        extra = f", method={self.method}"
        if self.init_scheme != "default":
            extra += f", init={self.init_scheme}"
        if self.gradient_clip is not None:
            extra += f", gradient_clip={self.gradient_clip}"
        if self.constrain_weights:
            extra += ", constrain_weights=True"
        return super().extra_repr() + extra


class Linear(FeedbackLayer, nn.Linear):
    """``nn.Linear`` learning with ``method``; takes input of any shape (..., in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None, *, method: str, **options) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.set_method(method, **options)

    @classmethod
    def from_module(cls, module: nn.Linear, method: str, **options) -> "Linear":
        """A ``Linear`` sharing ``module``'s weight and bias Parameters."""
        new = cls(module.in_features, module.out_features, module.bias is not None,
                  device="meta", method="bp")
        return new._take_over(module, method, options)

    def forward(self, x: Tensor) -> Tensor:
        if self._step_chores:
            self._do_step_chores()
        if self.plain_backward or not torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        out = functional.linear(x, self.weight, self.bias, self.rule.feedback(self),
                                self._learn_feedback, self.gradient_clip)
        return out if self._after_forward is None else self._after_forward(self, x, out)


class Conv2d(FeedbackLayer, nn.Conv2d):
    """``nn.Conv2d`` learning with ``method``: groups, dilation, every padding and padding_mode."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, method: str, **options) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        self.set_method(method, **options)

    @classmethod
    def from_module(cls, module: nn.Conv2d, method: str, **options) -> "Conv2d":
        """A ``Conv2d`` sharing ``module``'s weight and bias Parameters."""
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                  module.padding, module.dilation, module.groups, module.bias is not None,
                  module.padding_mode, device="meta", method="bp")
        return new._take_over(module, method, options)

    def _explicit_padding(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The input padded as the torch layer would, and the padding left to the conv."""
        pads = self._reversed_padding_repeated_twice  # (left, right, top, bottom)
        if self.padding_mode != "zeros":
            return F.pad(x, pads, mode=self.padding_mode), (0, 0)
        if not isinstance(self.padding, str):
            return x, self.padding
        if pads[0::2] == pads[1::2]:
            return x, (pads[2], pads[0])
        return F.pad(x, pads), (0, 0)  # "same" with an even kernel pads one side more

    def forward(self, x: Tensor) -> Tensor:
        if self._step_chores:
            self._do_step_chores()
        if self.plain_backward or not torch.is_grad_enabled():
            return self._conv_forward(x, self.weight, self.bias)
        padded, padding = self._explicit_padding(x)
        unbatched = padded.dim() == 3
        out = functional.conv2d(padded.unsqueeze(0) if unbatched else padded, self.weight,
                                self.bias, self.rule.feedback(self), self.stride, padding,
                                self.dilation, self.groups, self._learn_feedback,
                                self.gradient_clip)
        out = out.squeeze(0) if unbatched else out
        return out if self._after_forward is None else self._after_forward(self, x, out)


def feedback_layers(model: nn.Module) -> Iterator[tuple[str, FeedbackLayer]]:
    """``(name, layer)`` for every biofa layer in ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, FeedbackLayer):
            yield name, module


def buffer_names(model: nn.Module, wanted) -> list[str]:
    """The names ``model.named_buffers()`` gives the buffers of its biofa layers that
    ``wanted(layer, buffer_name)`` picks, in module order."""
    return [f"{name}.{buffer}" if name else buffer for name, layer in feedback_layers(model)
            for buffer, value in layer._buffers.items()
            if value is not None and wanted(layer, buffer)]


def fixed_state(model: nn.Module) -> set[str]:
    """The state-dict keys of ``model``'s fixed feedback buffers (``Rule.fixed_buffers``)."""
    return set(buffer_names(model, lambda layer, buffer: buffer in layer.rule.fixed_buffers))


@contextmanager
def _setting(model: nn.Module, attribute: str):
    layers = [layer for _, layer in feedback_layers(model)]
    before = [layer.__dict__.get(attribute) for layer in layers]
    for layer in layers:
        setattr(layer, attribute, True)
    try:
        yield model
    finally:
        for layer, value in zip(layers, before):
            if value is None:
                layer.__dict__.pop(attribute, None)
            else:
                setattr(layer, attribute, value)


def true_gradient(model: nn.Module):
    """Context in which every biofa layer of ``model`` backpropagates exactly.

    Same weights, same forward function, plain autograd: the gradient an attacker who
    knows the weights would use, and the reference for gradient alignment.
    """
    return _setting(model, "plain_backward")


def frozen_feedback(model: nn.Module):
    """Context in which forward passes neither refresh B nor constrain weights.

    For measurements that must leave training exactly as it would have been.
    """
    return _setting(model, "frozen")


def step_chores(model: nn.Module) -> list[list[bool]]:
    """Which once-per-step chores each biofa layer of ``model`` has done for its weight as
    it is now, in module order: for a checkpoint, with ``restore_step_chores`` after loading."""
    return [_steps.chores_done(layer) for _, layer in feedback_layers(model)]


def restore_step_chores(model: nn.Module, chores: list[list[bool]]) -> None:
    """After ``model.load_state_dict`` of the weights ``step_chores`` was taken with."""
    layers = [layer for _, layer in feedback_layers(model)]
    if len(layers) != len(chores):
        raise ValueError(f"{len(chores)} layers' chores for a model of {len(layers)} biofa layers")
    for layer, state in zip(layers, chores):
        _steps.restore_chores(layer, state)
