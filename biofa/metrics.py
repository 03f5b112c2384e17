"""How well the feedback path agrees with backpropagation, layer by layer.

* weight alignment: angle between W and the B the backward pass actually uses;
* norm ratio: ||B|| / ||W||;
* gradient alignment: angle between the weight update the method computes and the
  true backpropagation gradient on the same batch.

Angles are in degrees: 0 means B (or the update) points exactly along W (the true
gradient), 90 means no agreement at all.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import FeedbackLayer, feedback_layers, frozen_feedback, true_gradient


def angle(a: Tensor, b: Tensor) -> float:
    """Angle in degrees between two tensors seen as flat vectors (nan if either is zero)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    denominator = a.norm() * b.norm()
    if denominator == 0:
        return math.nan
    cosine = (a @ b / denominator).clamp(-1.0, 1.0)
    return math.degrees(math.acos(cosine.item()))


def weight_alignment(layer: FeedbackLayer) -> tuple[float, float]:
    """(angle between W and B in degrees, ||B|| / ||W||); nan where B is not W-shaped (dfa)."""
    feedback = layer.feedback_matrix()
    if feedback is None or feedback.shape != layer.weight.shape:
        return math.nan, math.nan
    weight = layer.weight.detach()
    ratio = (feedback.double().norm() / weight.double().norm()).item()
    return angle(weight, feedback), ratio


@contextmanager
def _measurement(model: nn.Module, inputs: Tensor):
    """Forward passes that leave no trace: RNG, buffers (BN statistics) and B untouched.

    Feedback layers are frozen, so only the other modules' buffers need a copy.
    """
    saved = [(buffer, buffer.clone()) for module in model.modules()
             if not isinstance(module, FeedbackLayer) for buffer in module.buffers(recurse=False)]
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), frozen_feedback(model):
            yield
    finally:
        with torch.no_grad():
            for buffer, copy in saved:
                buffer.copy_(copy)


def gradient_alignment(model: nn.Module, inputs: Tensor, targets: Tensor,
                       loss_fn=F.cross_entropy) -> dict[str, float]:
    """Per layer, the angle between the method's weight gradient and the true one.

    Both gradients come from the same batch, the same dropout masks and batch-norm
    batch statistics; nothing of the model's state (``.grad``, buffers, RNG, B)
    changes.
    """
    layers = dict(feedback_layers(model))
    weights = [layer.weight for layer in layers.values()]

    def grads():
        with _measurement(model, inputs):
            loss = loss_fn(model(inputs), targets)
            return torch.autograd.grad(loss, weights, allow_unused=True)

    method = grads()
    with true_gradient(model):
        exact = grads()
    return {name: math.nan if g is None or t is None else angle(g, t)
            for name, g, t in zip(layers, method, exact)}


def alignment(model: nn.Module, inputs: Tensor | None = None, targets: Tensor | None = None,
              loss_fn=F.cross_entropy) -> list[dict]:
    """One row per biofa layer: layer, method, weight_angle, norm_ratio, gradient_angle.

    ``gradient_angle`` is measured on (inputs, targets) when given, else nan.
    """
    gradients = (gradient_alignment(model, inputs, targets, loss_fn)
                 if inputs is not None else {})
    rows = []
    for name, layer in feedback_layers(model):
        weight_angle, ratio = weight_alignment(layer)
        rows.append({"layer": name, "method": layer.method, "weight_angle": weight_angle,
                     "norm_ratio": ratio, "gradient_angle": gradients.get(name, math.nan)})
    return rows
