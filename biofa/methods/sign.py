"""What the sign-concordant rules share: B = magnitude * sign(W), kept in one buffer.

B changes only when W does, so it is rebuilt in place the first time it is asked for
after W's version counter moved (an optimiser step, a load, a weight constraint): one
elementwise pass per step into memory that is reused, instead of a new tensor at every
forward pass. Rebuilding B in place while an earlier graph still holds it fails loudly in
that graph's backward (autograd's in-place check) rather than using the wrong B. Edits
through ``weight.data`` bypass the version counter: change weights in place under
``torch.no_grad()`` instead, as optimisers and ``load_state_dict`` do (fused optimisers
get their counters bumped by ``biofa.layers``' step hook).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import functional
from .base import Rule

_MASK = 0xFFFFFFFF


def sign_times_(out: Tensor, weight: Tensor, magnitude: Tensor | float) -> Tensor:
    """out = magnitude * sign(weight): one compiled pass on CPU float32, else two ops."""
    native = functional.compiled()
    tensor = isinstance(magnitude, Tensor)
    if native is not None and native.sign_times_(out, weight, magnitude if tensor else None,
                                                 0.0 if tensor else float(magnitude)):
        return out
    return torch.sign(weight.detach(), out=out).mul_(magnitude)


def _mix32(x: Tensor) -> Tensor:
    """Wellons' lowbias32 hash on int64 tensors holding 32-bit values (as feedback.cpp)."""
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


class SignConcordant(Rule):
    """Base of uSF, frSF and brSF; subclasses say what multiplies sign(W)."""

    def setup(self, layer: nn.Module) -> None:
        # derived from W (and the magnitudes): not part of the state dict
        layer.register_buffer("sign_feedback", torch.empty_like(layer.weight.detach()),
                              persistent=False)

    def magnitude(self, layer: nn.Module) -> Tensor | float:
        raise NotImplementedError

    def feedback(self, layer: nn.Module) -> Tensor:
        weight, feedback = layer.weight, layer.sign_feedback
        if weight._version != layer.versions.feedback:
            sign_times_(feedback, weight, self.magnitude(layer))
            layer.versions.feedback = weight._version
        return feedback

    def teardown(self, layer: nn.Module) -> None:
        super().teardown(layer)
        layer._buffers.pop("sign_feedback", None)
