"""Small building blocks shared by several GLEE modules (names match the official state dicts)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all stored as buffers.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, per channel.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale [C], bias [C]) with ``y = x * scale + bias``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, bias = self.affine()
        return torch.addcmul(bias.view(1, -1, 1, 1).to(x.dtype), x, scale.view(1, -1, 1, 1).to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def make_norm(kind: str | None, channels: int) -> nn.Module | None:
    """Normalisation layer by its detectron2 config name: ``FrozenBN``, ``BN``, ``GN`` (32 groups), ``LN`` or None."""
    if not kind:
        return None
    if kind == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    if kind == "GN":
        return nn.GroupNorm(32, channels)
    if kind == "LN":
        return LayerNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of FrozenBN, BN, GN, LN or None")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a [B, C, H, W] map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class Conv2dNorm(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` submodule and activation (detectron2's Conv2d layout).

    The norm is an attribute of the conv, so its parameters are named ``<conv>.norm.*`` as in the
    official checkpoints. A :class:`FrozenBatchNorm2d` is folded into the convolution (weights scaled per output
    channel, its shift as the bias: one pass over the output instead of two; same values up to float rounding,
    ~1e-6 relative) unless ``fold_norm`` is False (the official two passes).
    """

    def __init__(self, *args, norm: nn.Module | None = None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation
        self.fold_norm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_norm and isinstance(self.norm, FrozenBatchNorm2d):
            scale, shift = self.norm.affine()
            bias = shift if self.bias is None else torch.addcmul(shift, self.bias, scale)
            x = F.conv2d(x, self.weight * scale.view(-1, 1, 1, 1), bias, self.stride, self.padding, self.dilation,
                         self.groups)
        else:
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            if self.norm is not None:
                x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def set_norm_folding(module: nn.Module, enabled: bool) -> None:
    """Turn the folding of frozen batch norms into their convolutions on or off in every
    :class:`Conv2dNorm` inside ``module`` (off: the official conv-then-norm passes)."""
    for m in module.modules():
        if isinstance(m, Conv2dNorm):
            m.fold_norm = enabled


class MLP(nn.Module):
    """Feed-forward network: ``num_layers`` Linear layers with ReLU between them (``layers.{i}``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``log(x / (1 - x))`` with x clamped to [0, 1] and both terms clamped at ``eps`` (official)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
