"""What the sign-concordant rules share: B = magnitude * sign(W), following W as it learns.

B is derived from W (and the magnitudes), so it is not part of the state dict; it is
kept in one buffer and rebuilt only after W changed (see ``biofa.methods._fast``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._fast import sign_feedback
from .base import Rule


class SignConcordant(Rule):
    """Base of uSF, frSF and brSF; subclasses say what multiplies sign(W)."""

    def setup(self, layer: nn.Module) -> None:
        layer.register_buffer("sign_feedback", torch.empty_like(layer.weight.detach()),
                              persistent=False)

    def magnitude(self, layer: nn.Module) -> Tensor | float:
        """What multiplies sign(W): a number, or a tensor of W's shape."""
        raise NotImplementedError

    def feedback(self, layer: nn.Module) -> Tensor:
        return sign_feedback(layer, self.magnitude)

    def teardown(self, layer: nn.Module) -> None:
        super().teardown(layer)
        layer._buffers.pop("sign_feedback", None)
