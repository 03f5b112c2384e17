"""LeNet-5 style network for 32x32 inputs (MNIST padded to 32x32, or CIFAR).

The study's LeNet uses ReLU, as the 2021 benchmark does. ``lenet_mnist_tanh`` keeps
LeCun's original tanh: a bounded activation is what DRTP's fixed, never-decaying target
signal needs (Frenkel et al. train it with tanh), and with ReLU that signal grows the
weights without end. Both rectifying and saturating variants share one class.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class LeNet(nn.Module):
    """conv(6,5) - act - pool - conv(16,5) - act - pool - fc120 - act - fc84 - act - fc(classes).

    Layers are created in forward order so that ``fc3`` is the last
    Linear/Conv2d in ``modules()``; the learning-rule code relies on that to
    find the output layer.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 activation: Callable[[], nn.Module] = nn.ReLU):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.act1 = activation()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.act2 = activation()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.act3 = activation()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = activation()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = self.flatten(x)
        x = self.act3(self.fc1(x))
        x = self.act4(self.fc2(x))
        return self.fc3(x)


def lenet_mnist(num_classes: int = 10, in_channels: int = 1) -> LeNet:
    return LeNet(in_channels=in_channels, num_classes=num_classes)


def lenet_mnist_tanh(num_classes: int = 10, in_channels: int = 1) -> LeNet:
    return LeNet(in_channels=in_channels, num_classes=num_classes, activation=nn.Tanh)


def lenet_cifar(num_classes: int = 10, in_channels: int = 3) -> LeNet:
    return LeNet(in_channels=in_channels, num_classes=num_classes)
