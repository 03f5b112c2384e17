"""Fixed Random-magnitude Sign-concordant Feedback: B = |M| * sign(W), M drawn once."""

from torch import Tensor, nn

from .base import draw
from .sign import SignConcordant


class FRSF(SignConcordant):
    """|M| is stored (a buffer) and fixed; only the signs follow W."""

    name = "frsf"
    paper = "Liao, Leibo & Poggio 2016; Moskovitz, Litwin-Kumar & Abbott 2018"
    fixed_buffers = ("feedback_magnitude",)

    def setup(self, layer: nn.Module) -> None:
        super().setup(layer)
        layer.register_buffer("feedback_magnitude",
                              draw(layer.init_scheme, layer.weight.detach()).abs_())

    def magnitude(self, layer: nn.Module) -> Tensor:
        return layer.feedback_magnitude
