"""Uniform Sign-concordant Feedback: B = s * sign(W), following W as it learns."""

from torch import nn

from .base import init_std
from .sign import SignConcordant


class USF(SignConcordant):
    """``s`` is the standard deviation of the init distribution (Xiao et al. 2018)."""

    name = "usf"
    paper = "Liao, Leibo & Poggio 2016; scaled as in Xiao, Chen, Liao & Poggio 2018"

    def setup(self, layer: nn.Module) -> None:
        super().setup(layer)
        self.scale = init_std(layer.init_scheme, layer.weight.shape)

    def magnitude(self, layer: nn.Module) -> float:
        return self.scale
