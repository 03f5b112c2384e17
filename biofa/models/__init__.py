"""Model zoo: plain ``nn.Module`` classes and builder functions.

``build(name, ...)`` is the single entry point used by the rest of biofa.
Every model ends in a Linear layer that is the last Linear/Conv2d in
``modules()``, which is how the learning rules find the output layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from .common import Normalize
from .lenet import LeNet, lenet_cifar, lenet_mnist, lenet_mnist_tanh
from .resnet_cifar import (
    BasicBlock,
    CifarResNet,
    ShortcutA,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from ..errors import UsageError


def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """torchvision's ImageNet ResNet-18, untrained; conv1 swapped if in_channels != 3.

    Replacing ``conv1`` in place keeps its position in ``modules()``, so ``fc``
    stays the last layer.
    """
    import torchvision  # imported here: importing torchvision.models costs seconds

    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        old = net.conv1
        net.conv1 = nn.Conv2d(
            in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=False,
        )
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet_mnist": lenet_mnist,
    "lenet_mnist_tanh": lenet_mnist_tanh,
    "lenet_cifar": lenet_cifar,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet18": resnet18,
}

_DEFAULT_SHAPES: dict[str, tuple[int, int, int]] = {
    "lenet_mnist": (1, 32, 32),
    "lenet_mnist_tanh": (1, 32, 32),
    "lenet_cifar": (3, 32, 32),
    "resnet20": (3, 32, 32),
    "resnet32": (3, 32, 32),
    "resnet44": (3, 32, 32),
    "resnet56": (3, 32, 32),
    "resnet110": (3, 32, 32),
    "resnet18": (3, 224, 224),
}


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")


def input_shape(name: str, in_channels: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) the model expects; C is ``in_channels`` when given."""
    _check_name(name)
    c, h, w = _DEFAULT_SHAPES[name]
    return (c if in_channels is None else in_channels, h, w)


def build(
    name: str,
    num_classes: int = 10,
    in_channels: int | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> nn.Module:
    """Build model ``name``; with ``normalize=(mean, std)`` it expects inputs in [0, 1].

    The normalised model is ``Sequential(normalize=Normalize, net=model)`` so
    checkpoint keys are ``normalize.*`` and ``net.*``.
    """
    _check_name(name)
    c = input_shape(name, in_channels)[0]
    net = MODELS[name](num_classes=num_classes, in_channels=c)
    if normalize is None:
        return net
    mean, std = normalize
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), net=net))


__all__ = [
    "MODELS",
    "BasicBlock",
    "CifarResNet",
    "LeNet",
    "Normalize",
    "ShortcutA",
    "build",
    "input_shape",
    "lenet_cifar",
    "lenet_mnist",
    "lenet_mnist_tanh",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]
