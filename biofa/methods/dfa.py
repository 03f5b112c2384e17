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

The other direct rules are subclasses that change one thing: what the hub sends down
(DRTP, ``drtp.py``: the target instead of the error) or how B is kept (DKP, ``dkp.py``:
a Parameter that learns from the error times the layer's input).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional
from ..errors import SignalError
from .base import Rule, draw


def _target_signal(error: Tensor, check_on_host: bool) -> Tensor:
    """-y*/N from a softmax cross-entropy error e = (p - y*)/N: DRTP's hidden signal.

    The target class is the smallest component of each row of e: the only negative one
    (p < 1 there, p >= 0 elsewhere), or a zero where p rounded to 1 (then the others are
    tiny and positive). So the target is read from the error itself and no training loop
    needs to hand it over. A row with several negative components is no such error and
    is refused; an all-zero row (no error at all) sends nothing. N, the rows, scales the
    signal as a mean-reduced loss scales e.

    The refusal is a ``SignalError`` raised on the host wherever that costs no
    throughput: on the CPU, and on any device outside training (``check_on_host``: an
    attack whose loss is not cross-entropy, APGD-T's DLR or TPGD's KL, then skips what it
    cannot follow instead of failing). A training step on a GPU, or in a compiled graph,
    checks in the graph without waiting for the device; it fails at the next sync.
    """
    ok = (error < 0).sum(1) <= 1
    message = ("drtp: a row of the output error has more than one negative component, so it "
               "is not the error of a softmax cross-entropy loss, e = (p - y*)/N, from which "
               "drtp reads the target class; use cross-entropy on integer or one-hot labels, "
               "without label smoothing")
    if functional._transforming():
        pass  # torch.func: no check, the assert has no batching rule
    elif torch.compiler.is_compiling() or (error.device.type != "cpu" and not check_on_host):
        torch._assert_async(ok.all(), message)
    elif not bool(ok.all()):
        raise SignalError(message)
    classes = torch.arange(error.shape[1], device=error.device)
    target = (classes == error.argmin(1, keepdim=True)) & (error != 0).any(1, keepdim=True)
    return target.to(error.dtype).div_(-error.shape[0])


#: What the hub sends to the hidden layers, from the output error e (flat per sample) and
#: whether a refusal may wait for the device (see :func:`_target_signal`).
SIGNALS = {"error": lambda error, check_on_host: error, "target": _target_signal}


class _Project(torch.autograd.Function):
    """Identity on the network output; sends ``signal(e) @ B_l`` to every handed-over input.

    ``signal`` names an entry of ``SIGNALS``: the output error itself (DFA, DKP) or the
    target read from it (DRTP); ``check_on_host`` is true outside training. A B that
    requires grad (DKP's Parameter) gets
    ``e^T x_l``, the output error times the layer's input. In the ``setup_context``
    style, which torch.compile traces and torch.func transforms.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(out, signal, check_on_host, *inputs_and_feedbacks):
        return out.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        signal, check_on_host = inputs[1], inputs[2]
        inputs, feedbacks = inputs[3::2], inputs[4::2]
        ctx.signal, ctx.check_on_host = signal, check_on_host
        ctx.shapes = [x.shape for x in inputs]
        ctx.learned = [feedback.requires_grad for feedback in feedbacks]
        ctx.save_for_backward(*feedbacks,
                              *(x for x, learned in zip(inputs, ctx.learned) if learned))

    @staticmethod
    def backward(ctx, error):
        flat = error.reshape(error.shape[0], -1)
        sent = SIGNALS[ctx.signal](flat, ctx.check_on_host)
        feedbacks = ctx.saved_tensors[:len(ctx.shapes)]
        learned_inputs = iter(ctx.saved_tensors[len(ctx.shapes):])
        grads = [error, None, None]
        for i, (feedback, shape, learned) in enumerate(zip(feedbacks, ctx.shapes, ctx.learned)):
            grad_x = grad_feedback = None
            if ctx.needs_input_grad[3 + 2 * i]:
                grad_x = sent.mm(feedback.to(sent.dtype)).view(shape)
            if learned:
                x = next(learned_inputs).reshape(shape[0], -1)
                grad_feedback = flat.t().mm(x.to(flat.dtype)).to(feedback.dtype)
            grads += [grad_x, grad_feedback]
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

    def project(self, out: Tensor, signal: str = "error", training: bool = True) -> Tensor:
        """``out`` through ``_Project``: its backward sends ``SIGNALS[signal]`` down.

        ``training`` is the output layer's mode: outside training a signal that refuses
        an error does so on the host (see :func:`_target_signal`)."""
        entries, self.entries = self.entries, []
        if not entries:
            return out
        if out.shape[0] != entries[0][1].shape[0]:
            raise RuntimeError("the network output and the layer inputs differ in batch size")
        flat = [t for _, x, feedback in entries for t in (x, feedback)]
        return _Project.apply(out, signal, not training, *flat)


class DFA(Rule):
    """B_l maps the output error straight to layer l's input; set up by ``biofa.convert``.

    The base of the direct rules: a subclass says what the hub sends down (``signal``,
    a key of ``SIGNALS``) and how B is kept (``keep``: a fixed buffer here).
    """

    name = "dfa"
    paper = "Nokland 2016, NeurIPS"
    fixed_buffers = ("feedback_weight",)
    direct = True
    signal = "error"

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
        self.keep(layer, draw(layer.init_scheme, layer.weight.detach(), (num_outputs, numel)))

    def keep(self, layer: nn.Module, feedback: Tensor) -> None:
        """Store the freshly drawn B_l, shape (num_outputs, input numel), on the layer."""
        layer.register_buffer("feedback_weight", feedback)

    def feedback(self, layer: nn.Module) -> None:
        if self.hub is None:
            raise RuntimeError(
                f"a {self.name} layer needs its network: convert the whole model with "
                f"biofa.convert(model, {self.name!r}, input_size=...) instead of using the "
                "layer alone")
        return None

    def after_forward(self, layer: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        # a learned B is handed over also where x needs no gradient (the network input
        # in training): it learns from e^T x all the same, and attacks then use it
        if x.requires_grad or layer.feedback_weight.requires_grad:
            if tuple(x.shape[1:]) != self.input_shape:
                raise RuntimeError(
                    f"{self.name} layer was set up for inputs of shape {self.input_shape} per sample, "
                    f"got {tuple(x.shape[1:])}: convert again with the input_size you train on")
            self.hub.hand_over(layer, x, layer.feedback_weight)
        if not self.is_output:
            return out
        return self.hub.project(out, self.signal, layer.training)
