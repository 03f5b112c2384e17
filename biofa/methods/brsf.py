"""Batchwise Random-magnitude Sign-concordant Feedback: |M| redrawn every optimisation step."""

from torch import nn

from .base import fill_
from .frsf import FRSF


class BRSF(FRSF):
    """B = |M| * sign(W) with a new |M| after each optimiser step.

    The redraw happens at the first training forward pass after the weights changed,
    so gradient accumulation over several batches keeps one M, and evaluation (or a
    measurement) never redraws.
    """

    name = "brsf"
    paper = "Liao, Leibo & Poggio 2016; Moskovitz, Litwin-Kumar & Abbott 2018"

    def refresh(self, layer: nn.Module) -> None:
        if not layer.feedback_magnitude.is_contiguous():
            # a channels_last model: draw in logical order, so a seed gives the same M
            layer.feedback_magnitude = layer.feedback_magnitude.contiguous()
        fill_(layer.init_scheme, layer.feedback_magnitude).abs_()  # in place: no allocation
        layer._sign_version = None  # B = |M| sign(W) is rebuilt with the new M
