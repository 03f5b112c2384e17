"""Feedback Alignment: the error goes down through a fixed random matrix B."""

from torch import Tensor, nn

from .base import Rule, draw


class FA(Rule):
    """B is drawn once from the layer's init distribution and never changes."""

    name = "fa"
    paper = "Lillicrap, Cownden, Tweed & Akerman 2016, Nature Communications"
    fixed_buffers = ("feedback_weight",)

    def setup(self, layer: nn.Module) -> None:
        layer.register_buffer("feedback_weight", draw(layer.init_scheme, layer.weight.detach()))

    def feedback(self, layer: nn.Module) -> Tensor:
        return layer.feedback_weight
