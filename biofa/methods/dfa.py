"""Direct Feedback Alignment: every layer gets the output error through its own fixed B.

How it is wired (no hooks, no state kept between batches):

* Every DFA layer sends no error to its input through its weight (its backward
  computes only the weight gradient, which makes it cheaper than backpropagation).
* In the forward pass each DFA layer whose input needs a gradient hands
  ``(input, B_l)`` to the network's ``DFAHub``. The output layer then passes the
  network output through ``_Project``: an identity in the forward pass whose backward
  receives the output error e = dL/dy and returns ``e @ B_l`` as the gradient of
  every handed-over input. Autograd carries that signal back through the
  non-linearity, pooling and batch norm to the layer below, which so gets
  delta_l = f'(a_l) * (B_l e), as in Nokland 2016.
* The hub is emptied by the output layer in the same forward pass, so nothing of a
  training batch survives into the next call. Outside training (e.g. an attack with
  ``x.requires_grad``) the input of the first layer is handed over too, and the input
  gradient is ``e @ B_0``: the gradient the DFA network itself would use.

Convolutions are handled like linear layers on the flattened tensors: B_l has shape
(output numel, input numel) per sample, the full resolution of the layer's input, so
the projection needs the layer's input shape, found by one dry forward pass when the
model is converted. Memory: the sum over layers of ``num_outputs * input numel``
floats; 1.9 M (7.5 MB) for ResNet-20 on CIFAR-10, but 2.2 G floats (8.7 GB) for
ResNet-18 on ImageNet's 1000 classes at 224x224. Residual shortcuts still carry their
own exact (identity) gradient, added to the projected one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Rule, draw


class _Project(torch.autograd.Function):
    """Identity on the network output; sends ``e @ B_l`` to every handed-over input.

    In the ``setup_context`` style, which torch.compile traces and torch.func transforms.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(out, *inputs_and_feedbacks):
        return out.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        out, rest = inputs[0], inputs[1:]
        ctx.save_for_backward(*rest[1::2])
        ctx.shapes = [x.shape for x in rest[0::2]]

    @staticmethod
    def backward(ctx, error):
        flat = error.reshape(error.shape[0], -1)
        grads = [error]
        for feedback, shape in zip(ctx.saved_tensors, ctx.shapes):
            grads += [flat.mm(feedback.to(flat.dtype)).view(shape), None]
        return tuple(grads)


class DFAHub:
    """Collects ``(input, B)`` of a network's DFA layers during one forward pass."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, Tensor, Tensor]] = []

    def hand_over(self, layer: nn.Module, x: Tensor, feedback: Tensor) -> None:
        # A layer handing over twice means a new forward pass began without reaching
        # the output (e.g. an exception): start afresh instead of mixing two batches.
        if any(key == id(layer) for key, _, _ in self.entries):
            self.entries.clear()
        self.entries.append((id(layer), x, feedback))

    def project(self, out: Tensor) -> Tensor:
        entries, self.entries = self.entries, []
        if not entries:
            return out
        if out.shape[0] != entries[0][1].shape[0]:
            raise RuntimeError("dfa: the network output and the layer inputs differ in batch size")
        flat = [t for _, x, feedback in entries for t in (x, feedback)]
        return _Project.apply(out, *flat)


class DFA(Rule):
    """B_l maps the output error straight to layer l's input; set up by ``biofa.convert``."""

    name = "dfa"
    paper = "Nokland 2016, NeurIPS"
    fixed_buffers = ("feedback_weight",)

    def __init__(self) -> None:
        self.hub: DFAHub | None = None
        self.is_output = False
        self.input_shape: tuple[int, ...] | None = None

    def attach(self, layer: nn.Module, hub: DFAHub, num_outputs: int,
               input_shape: tuple[int, ...], is_output: bool) -> None:
        """Join ``hub``; ``input_shape`` is the layer's per-sample input shape."""
        self.hub, self.is_output, self.input_shape = hub, is_output, tuple(input_shape)
        numel = 1
        for size in input_shape:
            numel *= size
        layer.register_buffer(
            "feedback_weight", draw(layer.init_scheme, layer.weight.detach(), (num_outputs, numel)))

    def feedback(self, layer: nn.Module) -> None:
        if self.hub is None:
            raise RuntimeError(
                "a dfa layer needs its network: convert the whole model with "
                "biofa.convert(model, 'dfa', input_size=...) instead of using the layer alone")
        return None

    def after_forward(self, layer: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        if x.requires_grad:
            if tuple(x.shape[1:]) != self.input_shape:
                raise RuntimeError(
                    f"dfa layer was set up for inputs of shape {self.input_shape} per sample, "
                    f"got {tuple(x.shape[1:])}: convert again with the input_size you train on")
            self.hub.hand_over(layer, x, layer.feedback_weight)
        return self.hub.project(out) if self.is_output else out
