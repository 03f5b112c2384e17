"""Layers shared by the model zoo."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from ..errors import UsageError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer.

    Keeping normalisation inside the model lets attacks and data pipelines work
    on images in [0, 1], and the statistics are persistent buffers so that a
    saved ``state_dict`` is self-contained.
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape != std_t.shape:
            raise UsageError(f"mean and std differ in length: {mean_t.numel()} vs {std_t.numel()}")
        if torch.any(std_t <= 0):
            raise UsageError("std must be positive")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
