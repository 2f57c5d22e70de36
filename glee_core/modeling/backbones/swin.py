"""Swin Transformer backbone (GLEE-Plus uses Swin-L), state-dict names as the official ``D2SwinTransformer``.

Layout: ``patch_embed`` (conv patchify + LayerNorm), four ``layers.{i}`` stages of ``blocks.{j}`` with
(shifted) window attention and a ``downsample`` patch merging after every stage but the last, and one
LayerNorm ``norm{i}`` per output stage. Feature maps that are not window multiples are padded on the
right/bottom inside each block and cropped back; the shifted-window mask is built for the padded size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from . import register_backbone
from .base import Backbone

STAGE_NAMES = ("res2", "res3", "res4", "res5")
MASKED = -100.0  # official additive mask value between tokens of different shifted regions


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``p`` in training, rescaling the rest."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] (H, W multiples of ``window``) -> [B * nW, window * window, C], windows row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B * nW, window * window, C] -> [B, height, width, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def relative_position_index(window: int) -> torch.Tensor:
    """[window^2, window^2] int64: row of the bias table for each (query, key) token pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(height: int, width: int, window: int, shift: int, like: torch.Tensor) -> torch.Tensor:
    """Additive mask [nW, window^2, window^2] for a padded ``height`` x ``width`` map rolled by ``-shift``.

    Tokens from different regions of the rolled map (split at ``-window`` and ``-shift`` on each axis)
    get ``MASKED``, others 0. Created with ``like``'s device and dtype.
    """
    region = torch.zeros((1, height, width, 1), device=like.device, dtype=like.dtype)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, (hs, ws) in enumerate((hs, ws) for hs in bounds for ws in bounds):
        region[:, hs, ws, :] = i
    ids = window_partition(region, window).squeeze(-1)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, MASKED)


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2`` on the last dimension (dropout ``drop`` after each linear)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias.

    ``relative_position_index`` is a persistent int64 buffer computed from ``window`` (a state-dict
    constant): when a checkpoint lacks it, loading keeps the computed table.
    """

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "relative_position_index"
        if key not in state_dict:
            state_dict[key] = relative_position_index(self.window)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B * nW, N, C] (N = window^2), mask [nW, N, N] additive or None -> [B * nW, N, C]."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            bias = (bias + mask.unsqueeze(1)).repeat(bw // mask.shape[0], 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(bw, n, c)))


class SwinTransformerBlock(nn.Module):
    """Pre-norm block: (shifted) window attention and MLP, each with a residual and stochastic depth."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: float | None, drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift must be in [0, window={window}), got {shift}")
        self.window = window
        self.shift = shift
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, height: int, width: int, mask: torch.Tensor) -> torch.Tensor:
        """x [B, height * width, C]; mask from :func:`shifted_window_mask` (used when shifted) -> same shape."""
        b, _, c = x.shape
        y = self.norm1(x).view(b, height, width, c)
        pad_b, pad_r = (-height) % self.window, (-width) % self.window
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = height + pad_b, width + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask if self.shift else None)
        y = window_reverse(y, self.window, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :height, :width, :].reshape(b, height * width, c)
        x = x + drop_path(y, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat ([0,0], [1,0], [0,1], [1,1]) -> LayerNorm(4C) -> Linear to 2C, no bias.

    Odd sizes are zero-padded on the right/bottom first: [B, H * W, C] -> [B, ceil(H/2) * ceil(W/2), 2C].
    """

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, _, c = x.shape
        x = F.pad(x.view(b, height, width, c), (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating plain and shifted (by window // 2) windows, then ``downsample``."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: float | None, drop: float, attn_drop: float, drop_paths: Sequence[float],
                 downsample: bool, use_checkpoint: bool):
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window, 0 if i % 2 == 0 else self.shift, mlp_ratio, qkv_bias,
                                 qk_scale, drop, attn_drop, drop_paths[i])
            for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """x [B, H * W, C] -> (stage output [B, H * W, C], next-stage input, next H, next W)."""
        hp, wp = -(-height // self.window) * self.window, -(-width // self.window) * self.window
        mask = shifted_window_mask(hp, wp, self.window, self.shift, x)
        for block in self.blocks:
            if self.use_checkpoint and self.training:
                x = checkpoint(block, x, height, width, mask, use_reentrant=False)
            else:
                x = block(x, height, width, mask)
        if self.downsample is None:
            return x, x, height, width
        return x, self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


class PatchEmbed(nn.Module):
    """Zero-pad to patch multiples, ``proj`` conv (kernel = stride = patch), optional LayerNorm ``norm``."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, embed_dim, ceil(H/patch), ceil(W/patch)]."""
        h, w = x.shape[-2:]
        x = self.proj(F.pad(x, (0, (-w) % self.patch_size, 0, (-h) % self.patch_size)))
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


@register_backbone("swin")
class SwinTransformer(Backbone):
    """Swin Transformer returning ``res2``..``res5`` at strides patch_size * (1, 2, 4, 8), channels
    embed_dim * (1, 2, 4, 8), each after its ``norm{i}``. Defaults are Swin-T; GLEE-Plus (Swin-L) uses
    ``embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12,
    pretrain_img_size=384, drop_path_rate=0.3``. Input: normalised images [B, in_channels, H, W], any H, W.
    """

    def __init__(self, *, patch_size: int = 4, in_channels: int = 3, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.2, ape: bool = False,
                 pretrain_img_size: int = 224, patch_norm: bool = True, out_features: Sequence[str] = STAGE_NAMES,
                 use_checkpoint: bool = False):
        super().__init__()
        if len(depths) != len(num_heads) or not 1 <= len(depths) <= len(STAGE_NAMES):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} need the same length, 1 to 4")
        stage_names = STAGE_NAMES[:len(depths)]
        if not out_features or any(f not in stage_names for f in out_features):
            raise ValueError(f"out_features must be a non-empty subset of {stage_names}, got {list(out_features)}")
        self.in_channels = in_channels
        self.out_features = [name for name in stage_names if name in out_features]
        self.num_features = [embed_dim * 2 ** i for i in range(len(depths))]
        self.out_channels = {n: self.num_features[STAGE_NAMES.index(n)] for n in self.out_features}
        self.out_strides = {n: patch_size * 2 ** STAGE_NAMES.index(n) for n in self.out_features}

        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim, patch_norm)
        if ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList(
            BasicLayer(self.num_features[i], depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias, qk_scale,
                       drop_rate, attn_drop_rate, rates[sum(depths[:i]):sum(depths[:i + 1])],
                       downsample=i < len(depths) - 1, use_checkpoint=use_checkpoint)
            for i in range(len(depths)))
        for name in self.out_features:
            i = STAGE_NAMES.index(name)
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

    @property
    def size_divisibility(self) -> int:
        """The official D2 wrapper reports 32 (the model itself pads to any size)."""
        return 32

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B, in_channels, H, W] -> {name: [B, out_channels[name], ceil(H/stride), ceil(W/stride)]}."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"SwinTransformer expects images [B, {self.in_channels}, H, W], got {tuple(images.shape)}")
        x = self.patch_embed(images)
        height, width = x.shape[-2:]
        if self.absolute_pos_embed is not None:
            x = x + F.interpolate(self.absolute_pos_embed, size=(height, width), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outputs = {}
        for i, (name, layer) in enumerate(zip(STAGE_NAMES, self.layers)):
            out, x, next_h, next_w = layer(x, height, width)
            if name in self.out_features:
                out = getattr(self, f"norm{i}")(out)
                outputs[name] = out.view(-1, height, width, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
            height, width = next_h, next_w
        return outputs
