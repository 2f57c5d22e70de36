"""The interface every GLEE backbone implements."""
from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """An image feature extractor.

    Subclasses set ``out_features`` (names, finest first), ``out_channels`` and ``out_strides``
    (name -> int) and implement ``forward(images [B, 3, H, W] normalised) -> {name: [B, C, H/s, W/s]}``.
    """

    out_features: list[str]
    out_channels: dict[str, int]
    out_strides: dict[str, int]

    @property
    def size_divisibility(self) -> int:
        """Input sizes must be a multiple of this (0: any size)."""
        return 0

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError
