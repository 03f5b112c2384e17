"""Fixed Random-magnitude Sign-concordant Feedback: B = |M| * sign(W), M drawn once."""

import torch
from torch import Tensor, nn

from .base import Rule, draw


class FRSF(Rule):
    """|M| is stored (a buffer) and fixed; only the signs follow W."""

    name = "frsf"
    paper = "Liao, Leibo & Poggio 2016; Moskovitz, Litwin-Kumar & Abbott 2018"

    def setup(self, layer: nn.Module) -> None:
        layer.register_buffer("feedback_magnitude", self.draw_magnitude(layer))

    def draw_magnitude(self, layer: nn.Module) -> Tensor:
        return draw(layer.init_scheme, layer.weight.detach()).abs_()

    def feedback(self, layer: nn.Module) -> Tensor:
        return torch.sign(layer.weight.detach()).mul_(layer.feedback_magnitude)
