"""LeNet-5 style network for 32x32 inputs (MNIST padded to 32x32, or CIFAR)."""

from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """conv(6,5) - pool - conv(16,5) - pool - fc120 - fc84 - fc(num_classes).

    Layers are created in forward order so that ``fc3`` is the last
    Linear/Conv2d in ``modules()``; the learning-rule code relies on that to
    find the output layer.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)


def lenet_mnist(num_classes: int = 10, in_channels: int = 1) -> LeNet:
    return LeNet(in_channels=in_channels, num_classes=num_classes)


def lenet_cifar(num_classes: int = 10, in_channels: int = 3) -> LeNet:
    return LeNet(in_channels=in_channels, num_classes=num_classes)
