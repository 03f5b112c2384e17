"""Weight Mirror: B learns to mirror W from noise sent through the layer.

In a mirror phase each layer takes noise x ~ N(0, noise_std^2) as input and, with
y = W x its output (no bias), adds to B the correlation of the two with weight decay:

    B <- (1 - mirror_lr * mirror_decay) B + mirror_lr * mean_n(y x^T).

E[y x^T] = noise_std^2 W (W-shaped, as torch stores weights), so B tends to
noise_std^2 / mirror_decay * W: W itself with the defaults (noise_std = mirror_decay = 1).
The phase runs in the rule's ``refresh``: once after every optimiser step (at the next
training forward pass, or right after the step when the layer runs compiled), never in
evaluation or inside ``biofa.frozen_feedback``. The first step uses the random B of
``setup``, as FA would. Convolutions mirror on single receptive fields: the noise is
(mirror_batch, C_in, kh', kw') with kh', kw' the dilated kernel, so y has one position and
the correlation is torch's own weight gradient (``torch.nn.grad.conv2d_weight``).

Cost per layer and step, for mirror_batches batches of mirror_batch noise vectors: two
(mirror_batch x fan_in x fan_out) products, those of one layer's forward and weight
gradient on mirror_batch inputs of one receptive field each, independent of the image
size. The noise comes from a stream of the layer's own (``biofa.methods._stream``): the
same on every rank of a data-parallel run, and continued across a resume.

Change the defaults per model with a subclass, or per layer on ``layer.rule``.
Akrout, Wilson, Humphreys, Lillicrap & Tweed (2019), "Deep learning without weight
transport", NeurIPS.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._stream import Stream
from .fa import FA


class WM(FA):
    """B is a buffer, drawn as FA's, that the mirror phase pulls towards W after each step."""

    name = "wm"
    paper = "Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, NeurIPS (weight mirror)"
    fixed_buffers = ()  # mirrored after every step
    noise_std = 1.0
    mirror_lr = 0.1
    mirror_decay = 1.0
    mirror_batch = 64
    mirror_batches = 1

    def setup(self, layer: nn.Module) -> None:
        super().setup(layer)
        self.stream = Stream(layer)

    @torch.no_grad()
    def refresh(self, layer: nn.Module) -> None:
        weight, feedback = layer.weight.detach(), layer.feedback_weight
        generator = self.stream.generator(layer, weight.device)
        for _ in range(self.mirror_batches):
            feedback.mul_(1.0 - self.mirror_lr * self.mirror_decay).add_(
                mirror_correlation(layer, weight, self.mirror_batch, self.noise_std, generator),
                alpha=self.mirror_lr)

    def teardown(self, layer: nn.Module) -> None:
        super().teardown(layer)
        self.stream.teardown(layer)


def mirror_correlation(layer: nn.Module, weight: Tensor, n: int, std: float,
                       generator: torch.Generator | None = None) -> Tensor:
    """mean_n(y x^T) for n noise inputs x ~ N(0, std^2) of one receptive field, y = W x."""
    if weight.dim() == 2:
        x = torch.randn(n, weight.shape[1], device=weight.device, dtype=weight.dtype,
                        generator=generator) * std
        return F.linear(x, weight).t().mm(x).div_(n)
    field = [d * (k - 1) + 1 for k, d in zip(weight.shape[2:], layer.dilation)]
    x = torch.randn(n, weight.shape[1] * layer.groups, *field, device=weight.device,
                    dtype=weight.dtype, generator=generator) * std
    y = F.conv2d(x, weight, dilation=layer.dilation, groups=layer.groups)
    return torch.nn.grad.conv2d_weight(x, weight.shape, y, dilation=layer.dilation,
                                       groups=layer.groups).div_(n)
