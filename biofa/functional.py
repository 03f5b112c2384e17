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

from . import _native, ops


# The two Functions are written in the classic ``forward(ctx, ...)`` style: on CPU its
# dispatch costs about a third of the ``setup_context`` style's, and per-layer Python
# overhead is what separates a small network's step time from plain backprop
# (benchmarks/step_time.py). What they keep and compute is biofa.ops's, shared.
class _LinearFeedback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback, learn_feedback, clip):
        ops.linear_setup(ctx, (x, weight, bias, feedback, learn_feedback, clip), None)
        return F.linear(x, weight, bias)

    backward = staticmethod(ops.linear_backward)


class _Conv2dFeedback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback, learn_feedback, clip, stride, padding, dilation,
                groups):
        ops.conv2d_setup(ctx, (x, weight, bias, feedback, learn_feedback, clip, stride, padding,
                               dilation, groups), None)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    backward = staticmethod(ops.conv2d_backward)


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


_transforming = torch._C._are_functorch_transforms_active  # inside torch.func.grad, vmap...


def traced() -> bool:
    """Whether this call is being traced by torch.compile or transformed by torch.func.

    Then nothing may depend on version counters or keep state outside the graph: the
    layers skip their per-step chores (an optimiser step does them, see ``biofa._steps``)
    and the sign-concordant rules compute B from W in the graph.
    """
    return torch.compiler.is_compiling() or _transforming()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None,
           learn_feedback: bool = False, clip: float | None = None) -> Tensor:
    """``F.linear`` whose input gradient goes through ``feedback`` (any leading dims)."""
    if torch.compiler.is_compiling():
        return torch.ops.biofa.feedback_linear(x, weight, bias, feedback, learn_feedback, clip)
    if _transforming():
        return ops.TransformLinear.apply(x, weight, bias, feedback, learn_feedback, clip)
    return (_backend or backend()).linear(x, weight, bias, feedback, learn_feedback, clip)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None,
           stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1,
           learn_feedback: bool = False, clip: float | None = None) -> Tensor:
    """``F.conv2d`` (integer padding) whose input gradient goes through ``feedback``."""
    if torch.compiler.is_compiling():
        return torch.ops.biofa.feedback_conv2d(x, weight, bias, feedback, learn_feedback, clip,
                                               stride, padding, dilation, groups)
    if _transforming():
        return ops.TransformConv2d.apply(x, weight, bias, feedback, learn_feedback, clip,
                                         stride, padding, dilation, groups)
    return (_backend or backend()).conv2d(x, weight, bias, feedback, learn_feedback, clip,
                                          stride, padding, dilation, groups)
