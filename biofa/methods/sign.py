"""What the sign-concordant rules share: B = magnitude * sign(W), kept in one buffer.

B changes only when W does, so it is rebuilt in place the first time it is asked for
after W's version counter moved (an optimiser step, a load, a weight constraint): one
elementwise pass per step into memory that is reused, instead of a new tensor at every
forward pass. Rebuilding B in place while an earlier graph still holds it fails loudly in
that graph's backward (autograd's in-place check) rather than using the wrong B. Edits
through ``weight.data`` bypass the version counter: change weights in place under
``torch.no_grad()`` instead, as optimisers and ``load_state_dict`` do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Rule


class SignConcordant(Rule):
    """Base of uSF, frSF and brSF; subclasses say what multiplies sign(W)."""

    def setup(self, layer: nn.Module) -> None:
        # derived from W (and the magnitudes): not part of the state dict
        layer.register_buffer("sign_feedback", torch.empty_like(layer.weight.detach()),
                              persistent=False)
        layer._sign_version = None

    def magnitude(self, layer: nn.Module) -> Tensor | float:
        raise NotImplementedError

    def feedback(self, layer: nn.Module) -> Tensor:
        version = layer.weight._version
        if version != layer._sign_version:
            torch.sign(layer.weight.detach(), out=layer.sign_feedback).mul_(self.magnitude(layer))
            layer._sign_version = version
        return layer.sign_feedback

    def teardown(self, layer: nn.Module) -> None:
        super().teardown(layer)
        layer._buffers.pop("sign_feedback", None)
