"""Uniform Sign-concordant Feedback: B = s * sign(W), following W as it learns."""

import torch
from torch import Tensor, nn

from .base import Rule, init_std


class USF(Rule):
    """``s`` is the standard deviation of the init distribution (Xiao et al. 2018)."""

    name = "usf"
    paper = "Liao, Leibo & Poggio 2016; scaled as in Xiao, Chen, Liao & Poggio 2018"

    def setup(self, layer: nn.Module) -> None:
        self.scale = init_std(layer.init_scheme, layer.weight.shape)

    def feedback(self, layer: nn.Module) -> Tensor:
        return torch.sign(layer.weight.detach()).mul_(self.scale)
