"""The per-step passes of the sign-concordant rules, and how they are kept cheap.

B = magnitude * sign(W) changes only when W does, so it lives in one buffer
(``layer.sign_feedback``) that is rebuilt in place the first time it is asked for after
W's version counter moved (an optimiser step, a load, a weight constraint): one
elementwise pass per step into memory that is reused, instead of a new tensor at every
forward pass. Rebuilding B in place while an earlier graph still holds it fails loudly in
that graph's backward (autograd's in-place check) rather than using the wrong B. Edits
through ``weight.data`` bypass the version counter: change weights in place under
``torch.no_grad()`` instead, as optimisers and ``load_state_dict`` do (fused optimisers
get their counters bumped by ``biofa._steps``).

On CPU float32 each pass is one loop of the compiled extension (``biofa/csrc``); elsewhere,
or without it, the same numbers come from tensor ops.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .. import functional
from .base import init_std

_MASK = 0xFFFFFFFF


def sign_times_(out: Tensor, weight: Tensor, magnitude: Tensor | float) -> Tensor:
    """out = magnitude * sign(weight): one compiled pass on CPU float32, else two ops."""
    native = functional.compiled()
    tensor = isinstance(magnitude, Tensor)
    if native is not None and native.sign_times_(out, weight, magnitude if tensor else None,
                                                 0.0 if tensor else float(magnitude)):
        return out
    return torch.sign(weight.detach(), out=out).mul_(magnitude)


def sign_feedback(layer: nn.Module, magnitude: Callable[[nn.Module], Tensor | float]) -> Tensor:
    """``layer.sign_feedback`` = magnitude(layer) * sign(W), rebuilt only when W changed.

    Traced by torch.compile or under a torch.func transform, B is computed in the graph
    instead (the same numbers: one exact product per element).
    """
    weight, feedback = layer.weight, layer.sign_feedback
    if functional.traced():
        return torch.sign(weight.detach()) * magnitude(layer)
    if weight._version != layer.versions.feedback:
        sign_times_(feedback, weight, magnitude(layer))
        layer.versions.feedback = weight._version
    return feedback


def _mix32(x):
    """Wellons' lowbias32 hash of 32-bit values: Python ints, or int64 tensors holding them
    (as feedback.cpp)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def hashed_uniform(shape, seed: int, bound: float, like: Tensor) -> Tensor:
    """U(0, bound) numbers from the hash of (seed, element index), in ``like``'s dtype and
    device: the same numbers as the compiled redraw, on any device."""
    index = torch.arange(math.prod(shape), device=like.device, dtype=torch.int64)
    x = _mix32(_mix32((index * 0x9E3779B9 + (seed & _MASK)) & _MASK) ^ ((seed >> 32) & _MASK))
    # float16 cannot hold the 24-bit integers (its largest is 65504): scale them in float32
    dtype = torch.float32 if like.dtype == torch.float16 else like.dtype
    step = torch.tensor(bound / 16777216.0, dtype=dtype, device=like.device)
    return ((x >> 8).to(dtype) * step).to(like.dtype).view(shape)


def stream_seed(seed: int, draw: int) -> int:
    """The seed of redraw number ``draw`` of a layer whose own stream is ``seed``: a
    63-bit hash of the two, so redraws are independent of each other and of torch's
    global generators (which data-parallel ranks seed apart) and need no state beyond
    the two integers."""
    low = _mix32((seed ^ (draw * 0x9E3779B9)) & _MASK)
    high = _mix32((((seed >> 32) + draw * 0x85EBCA6B) & _MASK) ^ low)
    return ((high & 0x7FFFFFFF) << 32) | low


def redraw_magnitude_(layer: nn.Module, bound: float, seed: int) -> None:
    """New ``layer.feedback_magnitude`` from the init's distribution, from ``seed``; B follows.

    ``kaiming``: |N(0, s)|, a uniform init: U(0, bound). Both from a torch generator of the
    layer's device seeded with ``seed``, except U(0, bound) on the CPU: there the numbers are
    the hash of the element index and ``seed``, computed in the same pass that builds B and
    the same from the compiled and the Python backend (torch's CPU generator is serial and
    costs several percent of a small model's step).
    """
    magnitude, weight = layer.feedback_magnitude, layer.weight
    if not magnitude.is_contiguous():
        # a channels_last model: draw in logical order, so a seed gives the same M
        magnitude = layer.feedback_magnitude = magnitude.contiguous()
    layer.versions.feedback = None  # B = |M| sign(W) is rebuilt with the new M
    if layer.init_scheme == "kaiming" or not magnitude.is_cpu:
        generator = torch.Generator(magnitude.device).manual_seed(seed)
        if layer.init_scheme == "kaiming":
            magnitude.normal_(0.0, init_std("kaiming", magnitude.shape), generator=generator).abs_()
        else:
            magnitude.uniform_(0.0, bound, generator=generator)
    elif (native := functional.compiled()) is not None and native.redraw_uniform_(
            magnitude, layer.sign_feedback, weight, bound, seed):
        layer.versions.feedback = weight._version  # B was built in the same pass
    else:  # the same numbers as the compiled pass
        magnitude.copy_(hashed_uniform(magnitude.shape, seed, bound, magnitude))
