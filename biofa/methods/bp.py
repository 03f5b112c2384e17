"""Backpropagation: the error goes down through W itself (the baseline)."""

from .base import Rule


class BP(Rule):
    """Plain autograd; bit-identical to ``nn.Linear`` / ``nn.Conv2d``."""

    name = "bp"
    paper = "Rumelhart, Hinton & Williams 1986"
    plain_backward = True
