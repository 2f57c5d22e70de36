"""Detectron2-style ResNet backbone (GLEE-Lite), state-dict names ``stem.*``, ``res2.*`` .. ``res5.*``.

Layout follows detectron2's ``build_resnet_backbone``: a 7x7 stride-2 stem conv with norm and ReLU, a
3x3 stride-2 max-pool, then four stages of basic (depth 18/34) or bottleneck (depth 50/101/152) blocks.
Every conv is a :class:`Conv2dNorm` without bias whose norm lives at ``<conv>.norm``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import Conv2dNorm, make_norm
from . import register_backbone
from .base import Backbone

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm: str | None, *, stride: int = 1,
          dilation: int = 1, groups: int = 1) -> Conv2dNorm:
    """Bias-free conv with "same" padding for odd kernels and its norm attached as ``.norm``."""
    return Conv2dNorm(in_channels, out_channels, kernel_size, stride=stride, padding=dilation * (kernel_size // 2),
                      dilation=dilation, groups=groups, bias=False, norm=make_norm(norm, out_channels))


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: str | None) -> Conv2dNorm | None:
    """1x1 projection shortcut, present only when the channel count changes (detectron2 rule)."""
    if in_channels == out_channels:
        return None
    return _conv(in_channels, out_channels, 1, norm, stride=stride)


class BasicStem(nn.Module):
    """``conv1`` (7x7, stride 2) + norm + ReLU, then max-pool 3x3 stride 2 pad 1: [B, C, H, W] -> [B, C', H/4, W/4]."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str | None = "FrozenBN"):
        super().__init__()
        self.conv1 = Conv2dNorm(in_channels, out_channels, 7, stride=2, padding=3, bias=False,
                                norm=make_norm(norm, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride on the first) plus identity or projection shortcut; ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str | None = "FrozenBN"):
        super().__init__()
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = _conv(in_channels, out_channels, 3, norm, stride=stride)
        self.conv2 = _conv(out_channels, out_channels, 3, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out.add_(identity))


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (grouped, dilated) -> 1x1 convs plus identity or projection shortcut; ReLU after the sum.

    ``stride_in_1x1`` puts the stride on the first 1x1 conv (MSRA) instead of the 3x3 conv.
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str | None = "FrozenBN", stride_in_1x1: bool = False, dilation: int = 1):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, norm, stride=stride_1x1)
        self.conv2 = _conv(bottleneck_channels, bottleneck_channels, 3, norm, stride=stride_3x3,
                           dilation=dilation, groups=num_groups)
        self.conv3 = _conv(bottleneck_channels, out_channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLUs and the residual sum update fresh conv outputs in place (autograd needs none of them)
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out.add_(identity))


@register_backbone("resnet")
class ResNet(Backbone):
    """ResNet returning ``res2``..``res5`` (strides 4/8/16/32; 16 for res5 when ``res5_dilation`` is 2).

    Stages after the last requested output are not built (as in detectron2). ``freeze_at`` n sets
    ``requires_grad=False`` on the stem (n >= 1) and on stages res2..res{n} (n >= 2); FrozenBN
    statistics are buffers and never train. Input: normalised images [B, in_channels, H, W].
    """

    def __init__(self, *, depth: int = 50, in_channels: int = 3, stem_out_channels: int = 64,
                 res2_out_channels: int = 256, width_per_group: int = 64, num_groups: int = 1,
                 stride_in_1x1: bool = False, res5_dilation: int = 1, norm: str | None = "FrozenBN",
                 out_features: Sequence[str] = STAGE_NAMES, freeze_at: int = 0):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        if res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2, got {res5_dilation}")
        unknown = [f for f in out_features if f not in STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(f"out_features must be a non-empty subset of {STAGE_NAMES}, got {list(out_features)}")
        basic = depth < 50
        if basic and (res5_dilation != 1 or num_groups != 1):
            raise ValueError("ResNet-18/34 need res5_dilation=1 and num_groups=1")

        self.in_channels = in_channels
        self.stem = BasicStem(in_channels, stem_out_channels, norm)
        num_stages = max(STAGE_NAMES.index(f) for f in out_features) + 1
        self.out_features = [name for name in STAGE_NAMES if name in out_features]
        self.out_channels, self.out_strides = {}, {}
        stage_in, stage_out, bottleneck = stem_out_channels, res2_out_channels, num_groups * width_per_group
        stride_so_far = 4
        for idx, (name, num_blocks) in enumerate(zip(STAGE_NAMES[:num_stages], BLOCKS_PER_STAGE[depth])):
            dilation = res5_dilation if name == "res5" else 1
            first_stride = 1 if idx == 0 or dilation == 2 else 2
            blocks = []
            for i in range(num_blocks):
                block_in, stride = (stage_in, first_stride) if i == 0 else (stage_out, 1)
                if basic:
                    blocks.append(BasicBlock(block_in, stage_out, stride=stride, norm=norm))
                else:
                    blocks.append(BottleneckBlock(block_in, stage_out, bottleneck_channels=bottleneck, stride=stride,
                                                  num_groups=num_groups, norm=norm, stride_in_1x1=stride_in_1x1,
                                                  dilation=dilation))
            self.add_module(name, nn.Sequential(*blocks))
            stride_so_far *= first_stride
            if name in self.out_features:
                self.out_channels[name], self.out_strides[name] = stage_out, stride_so_far
            stage_in, stage_out, bottleneck = stage_out, stage_out * 2, bottleneck * 2
        self.stage_names = STAGE_NAMES[:num_stages]
        self.channels_last = True  # False: the official NCHW layout (same values; benchmarks' machine anchor)
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        frozen = [self.stem] if freeze_at >= 1 else []
        frozen += [getattr(self, name) for name in self.stage_names[:max(freeze_at - 1, 0)]]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B, in_channels, H, W] -> {name: [B, out_channels[name], ~H/stride, ~W/stride]}.

        Runs in channels-last memory layout (~25 % faster convolutions on CPU; the outputs keep it) unless
        ``self.channels_last`` is False.
        """
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"ResNet expects images [B, {self.in_channels}, H, W], got {tuple(images.shape)}")
        outputs = {}
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = self.stem(images.contiguous(memory_format=layout))
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs
