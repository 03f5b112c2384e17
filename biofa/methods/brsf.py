"""Batchwise Random-magnitude Sign-concordant Feedback: |M| redrawn every optimisation step."""

import math

from torch import nn

from ._fast import redraw_magnitude_
from ._stream import Stream
from .base import init_std
from .frsf import FRSF


class BRSF(FRSF):
    """B = |M| * sign(W) with a new |M| after each optimiser step.

    |M| is drawn from the init's distribution: U(0, bound) for a uniform init (``default``,
    ``xavier``), |N(0, s)| for ``kaiming``. The first step uses the M drawn at setup; the
    redraw happens at the first training forward pass after the weights changed (right
    after the step, when the layer runs compiled), so gradient accumulation over several
    batches keeps one M, and evaluation (or a measurement) never redraws.

    The redraws come from a stream of the layer's own (``biofa.methods._stream``), so
    they are the same on every rank of a data-parallel run and continue across a resume.
    """

    name = "brsf"
    paper = "Liao, Leibo & Poggio 2016; Moskovitz, Litwin-Kumar & Abbott 2018"
    fixed_buffers = ()  # redrawn after every step

    def setup(self, layer: nn.Module) -> None:
        super().setup(layer)
        # U(0, bound) has the init's standard deviation; fixed by the init and the shape
        self.bound = math.sqrt(3.0) * init_std(layer.init_scheme, layer.weight.shape)
        self.stream = Stream(layer)

    def refresh(self, layer: nn.Module) -> None:
        redraw_magnitude_(layer, self.bound, self.stream.next_seed(layer))

    def teardown(self, layer: nn.Module) -> None:
        super().teardown(layer)
        self.stream.teardown(layer)
