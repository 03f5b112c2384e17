"""The feedback linear and convolution as PyTorch operators, for torch.compile and torch.func.

``torch.ops.biofa.feedback_linear`` and ``torch.ops.biofa.feedback_conv2d`` are custom
operators (``torch.library.custom_op``): forward is ``F.linear`` / ``F.conv2d`` on any
device, a fake implementation lets torch.compile trace them without running them, and
the registered autograd formula is the one of ``biofa.functional``: the weight gradient
is the true local one, the error sent down goes through ``feedback`` (B) instead of the
weight (nothing when B is None), B gets the weight's gradient when it learns, and the
incoming error is clamped to [-clip, clip] first. The formula is written in aten ops, so
inductor compiles the backward like plain backprop's.

Which one runs (``biofa.functional.linear`` and ``conv2d`` choose, per call):

* eager: the compiled extension's backward node or ``functional``'s autograd Functions,
  whose per-call cost is lowest (a custom op's Python dispatch costs more than a small
  layer's arithmetic on the CPU);
* inside torch.compile: the operators;
* inside a torch.func transform (``grad``, ``vmap``, ``jacrev``...): ``TransformLinear`` and
  ``TransformConv2d``, autograd Functions in the ``setup_context`` style that torch.func
  requires (torch.library's autograd wrapper refuses functorch transforms). vmap rules
  are generated from the same formula.

All three give the same numbers: they share ``linear_grads`` and ``conv2d_grads``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_CONVOLUTION_BACKWARD = torch.ops.aten.convolution_backward.default  # no lookup per call


def cast(tensor: Tensor, like: Tensor) -> Tensor:
    """``tensor`` in ``like``'s dtype (under autocast the error arrives in half precision)."""
    return tensor if tensor.dtype == like.dtype else tensor.to(like.dtype)


def clipped(error: Tensor, clip: float | None) -> Tensor:
    """The incoming error clamped to [-clip, clip]; as it is when clip is None."""
    return error if clip is None else error.clamp(-clip, clip)


def linear_grads(grad_out: Tensor, x: Tensor, feedback: Tensor | None, clip: float | None,
                 needs: Sequence[bool], learn_feedback: bool) -> tuple:
    """(grad_x, grad_weight, grad_bias, grad_feedback) of the feedback linear layer.

    ``needs``: whether x, the weight and the bias need their gradients (autograd's
    ``needs_input_grad``); unneeded ones are None. Any leading dims.
    """
    need_x, need_w, need_b = needs[:3]
    grad_out = clipped(grad_out, clip)
    grad_x = grad_w = grad_b = None
    if need_x and feedback is not None:
        grad_x = grad_out.matmul(cast(feedback, grad_out))
    if grad_out.dim() != 2:  # any leading dims: one matrix product over all of them
        grad_out, x = grad_out.reshape(-1, grad_out.shape[-1]), x.reshape(-1, x.shape[-1])
    if need_w or learn_feedback:
        grad_w = grad_out.t().mm(cast(x, grad_out))
    if need_b:
        grad_b = grad_out.sum(0)
    return grad_x, grad_w if need_w else None, grad_b, grad_w if learn_feedback else None


def conv2d_grads(grad_out: Tensor, x: Tensor, matrix: Tensor, sends_error: bool,
                 bias_size: int | None, clip: float | None, conv: tuple,
                 needs: Sequence[bool], learn_feedback: bool) -> tuple:
    """(grad_x, grad_weight, grad_bias, grad_feedback) of the feedback convolution.

    ``matrix`` is B, or the weight when no error is sent down (the weight gradient needs
    only its shape); ``conv`` is (stride, padding, dilation, groups).
    """
    need_x, need_w, need_b = needs[:3]
    grad_out = clipped(grad_out, clip)
    stride, padding, dilation, groups = conv
    mask = [need_x and sends_error, need_w or learn_feedback, need_b]
    grad_x, grad_w, grad_b = _CONVOLUTION_BACKWARD(
        grad_out, cast(x, grad_out), cast(matrix, grad_out),
        None if bias_size is None else [bias_size], stride, padding, dilation, False, [0, 0],
        groups, mask)
    return grad_x, grad_w if need_w else None, grad_b, grad_w if learn_feedback else None


# --- the operators ----------------------------------------------------------------------

@torch.library.custom_op("biofa::feedback_linear", mutates_args=())
def feedback_linear(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None,
                    learn_feedback: bool, clip: float | None) -> Tensor:
    """``F.linear`` whose backward sends the error through ``feedback``."""
    return F.linear(x, weight, bias)


@feedback_linear.register_fake
def _feedback_linear_fake(x, weight, bias, feedback, learn_feedback, clip):
    return F.linear(x, weight, bias)


def linear_setup(ctx, inputs, output) -> None:
    """What the linear layer's backward keeps (autograd's ``setup_context``)."""
    x, _, _, feedback, learn_feedback, clip = inputs
    ctx.save_for_backward(x, feedback)
    ctx.learn_feedback, ctx.clip = learn_feedback, clip


def linear_backward(ctx, grad_out):
    x, feedback = ctx.saved_tensors
    grads = linear_grads(grad_out, x, feedback, ctx.clip, ctx.needs_input_grad,
                         ctx.learn_feedback)
    return grads + (None, None)


feedback_linear.register_autograd(linear_backward, setup_context=linear_setup)


@torch.library.custom_op("biofa::feedback_conv2d", mutates_args=())
def feedback_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None,
                    learn_feedback: bool, clip: float | None, stride: Sequence[int],
                    padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    """``F.conv2d`` (integer padding) whose backward sends the error through ``feedback``."""
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


@feedback_conv2d.register_fake
def _feedback_conv2d_fake(x, weight, bias, feedback, learn_feedback, clip, stride, padding,
                          dilation, groups):
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def conv2d_setup(ctx, inputs, output) -> None:
    """What the convolution's backward keeps: B, or the weight when no error is sent down
    (the weight gradient needs only its shape)."""
    x, weight, bias, feedback, learn_feedback, clip, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight if feedback is None else feedback)
    ctx.sends_error = feedback is not None
    ctx.bias_size = None if bias is None else bias.shape[0]
    ctx.learn_feedback, ctx.clip = learn_feedback, clip
    ctx.conv = (list(stride), list(padding), list(dilation), groups)


def conv2d_backward(ctx, grad_out):
    x, matrix = ctx.saved_tensors
    grads = conv2d_grads(grad_out, x, matrix, ctx.sends_error, ctx.bias_size, ctx.clip,
                         ctx.conv, ctx.needs_input_grad, ctx.learn_feedback)
    return grads + (None,) * 6


feedback_conv2d.register_autograd(conv2d_backward, setup_context=conv2d_setup)


# --- under torch.func transforms -------------------------------------------------------

class TransformLinear(torch.autograd.Function):
    """The feedback linear for torch.func: same formula, ``setup_context`` style."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, feedback, learn_feedback, clip):
        return F.linear(x, weight, bias)

    setup_context = staticmethod(linear_setup)
    backward = staticmethod(linear_backward)


class TransformConv2d(torch.autograd.Function):
    """The feedback convolution for torch.func: same formula, ``setup_context`` style."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, feedback, learn_feedback, clip, stride, padding, dilation,
                groups):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    setup_context = staticmethod(conv2d_setup)
    backward = staticmethod(conv2d_backward)
