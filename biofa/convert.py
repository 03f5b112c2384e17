"""Turn any PyTorch model into one that learns with a feedback-alignment rule."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import LAYER_OPTIONS, Conv2d, FeedbackLayer, Linear, redraw_parameters_
from .methods import METHODS, DFAHub, get_rule
from .methods.base import check_init
from .errors import UsageError

#: Options only the direct rules (``Rule.direct``: dfa, drtp, dkp) take: the projections
#: need the network's output size and the per-sample input shape of every layer.
DFA_OPTIONS = ("num_classes", "input_size", "output_layer")


@dataclass
class ConversionReport:
    """What ``convert`` did: the layers it swapped and the ones it left on exact gradients."""

    method: str
    converted: list[tuple[str, str]] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    output_layer: str | None = None

    def __str__(self) -> str:
        lines = [f"biofa.convert: {len(self.converted)} layers now learn with {self.method!r}"]
        lines += [f"  {name:<40} {kind}" for name, kind in self.converted]
        if self.output_layer is not None:
            lines.append(f"  output layer (receives the true error): {self.output_layer}")
        if self.kept:
            kinds = sorted({kind for _, kind in self.kept})
            lines.append(f"  left on exact gradients: {len(self.kept)} modules ({', '.join(kinds)})")
        return "\n".join(lines)


def _check_options(method: str, options: dict) -> bool:
    """Refuse options ``method`` does not take; whether it is a direct rule."""
    direct = get_rule(method).direct
    valid = LAYER_OPTIONS + (DFA_OPTIONS if direct else ())
    unknown = sorted(set(options) - set(valid))
    if unknown:
        rules = ", ".join(name for name, rule in METHODS.items() if rule.direct)
        hint = "" if direct else f" ({', '.join(DFA_OPTIONS)} are for the direct rules only: {rules})"
        raise UsageError(f"unknown option(s) {', '.join(map(repr, unknown))} for method "
                         f"{method!r}; valid options: {', '.join(valid)}{hint}")
    return direct


def _targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers to swap; not the projections that attention reads weights from directly."""
    skip = {f"{name}.{child}" if name else child
            for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)
            for child, _ in m.named_children()}
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and name and name not in skip]


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _shapes(model: nn.Module, targets, input_size,
            method: str) -> tuple[dict[str, tuple], dict[str, int]]:
    """Per-sample input shape and output numel of each target layer, by a dry run.

    The probe is made like the model's first floating-point parameter, on its device and
    in its dtype: a float64 or bfloat16 model refuses float32 input.
    """
    like = next(p for p in model.parameters() if p.is_floating_point())
    shapes: dict[str, tuple] = {}
    outputs: dict[str, int] = {}

    def record(name):
        def hook(module, args, out):
            shapes.setdefault(name, tuple(args[0].shape[1:]))
            outputs.setdefault(name, out[0].numel())
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in targets]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, *input_size, device=like.device, dtype=like.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    unused = [name for name, _ in targets if name not in shapes]
    if unused:
        raise UsageError(f"{method}: layers {unused} are not used in the forward pass; "
                         "remove them or convert them yourself")
    return shapes, outputs


def convert(model: nn.Module, method: str, **options) -> ConversionReport:
    """Swap every ``nn.Linear`` / ``nn.Conv2d`` (subclasses too) of ``model`` in place.

    The new layers share the old weight and bias Parameters, so the forward function is
    unchanged (unless ``init`` redraws it) and an existing optimiser keeps working; all
    other modules (batch norm, pooling, attention) stay on exact gradients.

    Options for every method: ``init`` (None, "xavier", "kaiming"), ``gradient_clip``,
    ``constrain_weights``. For the direct rules (``dfa``, ``drtp``, ``dkp``) also:
    ``num_classes`` (checked against the model
    when the output size is known), ``input_size`` (per-sample shape such as (3, 32, 32);
    required when the model has convolutions or non-flat inputs) and ``output_layer``
    (its name; default the last Linear/Conv2d in module order).
    """
    direct = _check_options(method, options)
    check_init(options.get("init"))
    dfa = {key: options.pop(key) for key in DFA_OPTIONS if key in options}
    targets = _targets(model)
    if not targets:
        raise UsageError("convert: the model has no nn.Linear or nn.Conv2d layer to convert")
    report = ConversionReport(method)
    if options.get("init") is not None:
        for _, module in targets:  # every W before any B: one seed, one start, any method
            redraw_parameters_(module, options["init"])
    if direct:
        setup_dfa = _DFAPlan(model, targets, method, **dfa)
        report.output_layer = setup_dfa.output
    for name, module in targets:
        cls = Conv2d if isinstance(module, nn.Conv2d) else Linear
        new = cls.from_module(module, method, redraw_weights=False, **options)
        _swap(model, name, new)
        report.converted.append((name, type(module).__name__))
        if direct:
            setup_dfa(name, new)
    converted = {name for name, _ in targets}
    report.kept = [(name, type(m).__name__) for name, m in model.named_modules()
                   if name and not isinstance(m, FeedbackLayer) and not list(m.children())
                   and name not in converted]
    return report


class _DFAPlan:
    """Where each direct layer's projection lands; attaches layers to one shared hub."""

    def __init__(self, model, targets, method, num_classes=None, input_size=None,
                 output_layer=None):
        names = [name for name, _ in targets]
        self.output = output_layer or names[-1]
        if self.output not in names:
            raise UsageError(f"{method}: output_layer {self.output!r} is not a Linear/Conv2d of the "
                             f"model; candidates: {', '.join(names)}")
        if input_size is not None:
            self.shapes, outputs = _shapes(model, targets, tuple(input_size), method)
            outputs = outputs[self.output]  # the error is projected from this layer's output
        elif all(isinstance(m, nn.Linear) for _, m in targets):
            self.shapes = {name: (m.in_features,) for name, m in targets}
            outputs = dict(targets)[self.output].out_features
        else:
            raise UsageError(f"{method}: this model has convolutions, so the projections need "
                             "the input shape; pass input_size, e.g. "
                             f"biofa.convert(model, {method!r}, input_size=(3, 32, 32))")
        if num_classes is not None and num_classes != outputs:
            raise UsageError(f"{method}: num_classes={num_classes} but the output layer "
                             f"{self.output!r} gives {outputs} values")
        self.outputs, self.hub = outputs, DFAHub()

    def __call__(self, name: str, layer: FeedbackLayer) -> None:
        layer.rule.attach(layer, self.hub, self.outputs, self.shapes[name], name == self.output)


__all__ = ["convert", "ConversionReport", "METHODS", "DFA_OPTIONS"]
