"""Kolen-Pollack: B gets exactly W's update, so weight decay pulls the two together."""

from torch import Tensor, nn

from .base import Rule, draw


class KP(Rule):
    """B is a Parameter whose gradient is the weight's gradient.

    Put it in the same optimiser parameter group as W (``model.parameters()`` does):
    W - B then shrinks by (1 - lr * weight_decay) per SGD step, so B aligns with W
    only when weight decay is on (Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019).
    """

    name = "kp"
    paper = "Kolen & Pollack 1994; Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019"
    learns_feedback = True

    def setup(self, layer: nn.Module) -> None:
        layer.feedback_weight = nn.Parameter(draw(layer.init_scheme, layer.weight.detach()))

    def feedback(self, layer: nn.Module) -> Tensor:
        return layer.feedback_weight
