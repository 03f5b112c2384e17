"""Linear and convolution whose backward pass sends the error through a feedback matrix.

Forward is the ordinary ``F.linear`` / ``F.conv2d``. Backward costs what
backpropagation costs, one product for the error and one for the weight gradient:

* grad_weight = the true local gradient, error times the layer's own input;
* grad_input  = the error through ``feedback`` (B) instead of the weight, or nothing
  when ``feedback`` is None (DFA's layers get their error from the output instead);
* the gradient for ``feedback`` is grad_weight when ``learn_feedback`` (Kolen-Pollack).

``clip`` clamps the incoming error elementwise to [-clip, clip] before it is used;
None (the only spelling) clips nothing. Layers normalise their ``gradient_clip`` option
to one of the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _native


_CONVOLUTION_BACKWARD = torch.ops.aten.convolution_backward.default  # the overload: no lookup per call


def _cast(tensor: Tensor, like: Tensor) -> Tensor:
    """``tensor`` in ``like``'s dtype (under autocast the error arrives in half precision)."""
    return tensor if tensor.dtype == like.dtype else tensor.to(like.dtype)


def _clipped(error: Tensor, clip: float | None) -> Tensor:
    """The incoming error clamped to [-clip, clip]; as it is when clip is None."""
    return error if clip is None else error.clamp(-clip, clip)


# The two Functions are written in the classic ``forward(ctx, ...)`` style: on CPU its
# dispatch costs about a third of the ``setup_context`` style's, and per-layer Python
# overhead is what separates a small network's step time from plain backprop
# (benchmarks/step_time.py).
class _LinearFeedback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback, learn_feedback, clip):
        ctx.save_for_backward(x, feedback)
        ctx.learn_feedback, ctx.clip = learn_feedback, clip
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_out = _clipped(grad_out, ctx.clip)
        grad_x = grad_w = grad_b = None
        if need_x and feedback is not None:
            grad_x = grad_out.matmul(_cast(feedback, grad_out))
        if grad_out.dim() != 2:  # any leading dims: one matrix product over all of them
            grad_out, x = grad_out.reshape(-1, grad_out.shape[-1]), x.reshape(-1, x.shape[-1])
        if need_w or ctx.learn_feedback:
            grad_w = grad_out.t().mm(_cast(x, grad_out))
        if need_b:
            grad_b = grad_out.sum(0)
        return (grad_x, grad_w if need_w else None, grad_b,
                grad_w if ctx.learn_feedback else None, None, None)


class _Conv2dFeedback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback, learn_feedback, clip, stride, padding, dilation,
                groups):
        # The weight gradient needs only the weight's shape: when no error is sent
        # down, the weight stands in for B in the fused backward call.
        ctx.save_for_backward(x, weight if feedback is None else feedback)
        ctx.sends_error = feedback is not None
        ctx.bias_sizes = None if bias is None else [bias.shape[0]]
        ctx.learn_feedback, ctx.clip = learn_feedback, clip
        ctx.conv = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, matrix = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_out = _clipped(grad_out, ctx.clip)
        stride, padding, dilation, groups = ctx.conv
        mask = [need_x and ctx.sends_error, need_w or ctx.learn_feedback, need_b]
        grad_x, grad_w, grad_b = _CONVOLUTION_BACKWARD(
            grad_out, _cast(x, grad_out), _cast(matrix, grad_out), ctx.bias_sizes,
            stride, padding, dilation, False, [0, 0], groups, mask)
        return (grad_x, grad_w if need_w else None, grad_b,
                grad_w if ctx.learn_feedback else None) + (None,) * 6


class _Python:
    """The autograd Functions above: the reference, and the fallback backend."""

    linear = staticmethod(_LinearFeedback.apply)
    conv2d = staticmethod(_Conv2dFeedback.apply)


_backend = None  # resolved at the first call: see backend()


def backend():
    """What runs the two functions: the compiled module (``biofa._native``) or ``_Python``.

    Tests and benchmarks switch backends by setting ``_backend``; the sign-concordant
    rules' passes follow the same choice through ``compiled()``.
    """
    global _backend
    if _backend is None:
        _backend = _native.load() or _Python
    return _backend


def compiled():
    """The compiled module, or None where it did not build (or BIOFA_NATIVE=0)."""
    chosen = backend()
    return None if chosen is _Python else chosen


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None,
           learn_feedback: bool = False, clip: float | None = None) -> Tensor:
    """``F.linear`` whose input gradient goes through ``feedback`` (any leading dims)."""
    return (_backend or backend()).linear(x, weight, bias, feedback, learn_feedback, clip)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None,
           stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1,
           learn_feedback: bool = False, clip: float | None = None) -> Tensor:
    """``F.conv2d`` (integer padding) whose input gradient goes through ``feedback``."""
    return (_backend or backend()).conv2d(x, weight, bias, feedback, learn_feedback, clip,
                                          stride, padding, dilation, groups)
