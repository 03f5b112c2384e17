"""Batchwise Random-magnitude Sign-concordant Feedback: |M| redrawn every optimisation step."""

import math

import torch
from torch import nn

from .base import fill_, init_std
from .frsf import FRSF
from .sign import hashed_uniform
from .. import functional


class BRSF(FRSF):
    """B = |M| * sign(W) with a new |M| after each optimiser step.

    The redraw happens at the first training forward pass after the weights changed,
    so gradient accumulation over several batches keeps one M, and evaluation (or a
    measurement) never redraws.

    With a uniform init (``default``, ``xavier``) on the CPU, |M| ~ U(0, bound) comes from
    a counter-based generator: a hash of the element index and a seed taken from torch's
    CPU generator at each redraw. It runs in the same pass that builds B, and gives the
    same numbers from the compiled and the Python backend (torch's own CPU
    generator is serial and costs several percent of a small model's step). On a GPU,
    torch's generator of that device draws M in one kernel (a hash in tensor ops would be
    a dozen launches per layer). ``kaiming`` draws |N(0, s)| with torch's generator.
    """

    name = "brsf"
    paper = "Liao, Leibo & Poggio 2016; Moskovitz, Litwin-Kumar & Abbott 2018"

    def setup(self, layer: nn.Module) -> None:
        super().setup(layer)
        # U(0, bound) has the init's standard deviation; fixed by the init and the shape
        self.bound = math.sqrt(3.0) * init_std(layer.init_scheme, layer.weight.shape)

    def refresh(self, layer: nn.Module) -> None:
        magnitude, weight = layer.feedback_magnitude, layer.weight
        if not magnitude.is_contiguous():
            # a channels_last model: draw in logical order, so a seed gives the same M
            magnitude = layer.feedback_magnitude = magnitude.contiguous()
        layer.versions.feedback = None  # B = |M| sign(W) is rebuilt with the new M
        if layer.init_scheme == "kaiming":
            fill_(layer.init_scheme, magnitude).abs_()
        elif not magnitude.is_cpu:
            magnitude.uniform_(0.0, self.bound)
        elif (native := functional.compiled()) is not None and native.redraw_uniform_(
                magnitude, layer.sign_feedback, weight, self.bound):
            layer.versions.feedback = weight._version  # B was built in the same pass
        else:  # the same seed (from torch's CPU generator) and numbers as the compiled pass
            seed = int(torch.empty((), dtype=torch.int64).random_())
            magnitude.copy_(hashed_uniform(magnitude.shape, seed, self.bound, magnitude))
