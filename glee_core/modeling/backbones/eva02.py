"""EVA02 vision transformer with a ViTDet simple feature pyramid: the GLEE Pro backbone (official ``D2_EVA02``).

The plain ViT (``net``) embeds 16x16 patches, adds a bicubically resized absolute position embedding and runs
blocks of rotary-position attention (windowed or global) followed by a SwiGLU MLP with an inner LayerNorm. The
pyramid (``simfp_<stage>``) turns its stride-16 map into p3..p5 and a max-pooled p6.

Official quirk kept on purpose: the rotary tables are built once for a fixed grid (``img_size / patch_size`` for
global blocks, ``window_size`` for window blocks); when a block sees a different number of tokens, the *first*
``n_tokens`` rows of its table are used, whatever the grid shape. More tokens than rows is an error.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from glee_core.modeling.backbones import register_backbone
from glee_core.modeling.backbones.base import Backbone
from glee_core.modeling.layers import Conv2dNorm, LayerNorm2d

PRO_WINDOW_BLOCK_INDEXES = (0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of the last dimension: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class VisionRotaryEmbedding(nn.Module):
    """2-D rotary position table for a ``ft_seq_len`` x ``ft_seq_len`` grid (official ``VisionRotaryEmbeddingFast``).

    ``dim`` is half the head dimension: the first ``dim`` channels of a head rotate with the row index and the last
    ``dim`` with the column index, positions rescaled to a ``pt_seq_len`` grid. Buffers ``freqs_cos`` / ``freqs_sin``
    have shape [ft_seq_len**2, 2 * dim] and are computed here, not loaded.
    """

    def __init__(self, dim: int, pt_seq_len: int, ft_seq_len: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        positions = torch.arange(ft_seq_len) / ft_seq_len * pt_seq_len
        freqs = (positions[:, None] * inv_freq[None, :]).repeat_interleave(2, dim=-1)
        grid = torch.cat(
            (freqs[:, None, :].expand(-1, ft_seq_len, -1), freqs[None, :, :].expand(ft_seq_len, -1, -1)), dim=-1
        ).reshape(ft_seq_len * ft_seq_len, 2 * dim)
        self.register_buffer("freqs_cos", grid.cos())
        self.register_buffer("freqs_sin", grid.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., N, 2 * dim] -> same shape, rotated by the first N rows of the table (official truncation)."""
        n_tokens, n_rows = x.shape[-2], self.freqs_cos.shape[0]
        if n_tokens > n_rows:
            raise ValueError(
                f"{n_tokens} tokens exceed the rotary table of {n_rows} positions; "
                "raise img_size (global blocks) or use a smaller input"
            )
        cos, sin = self.freqs_cos[:n_tokens], self.freqs_sin[:n_tokens]
        return (x * cos + rotate_half(x) * sin).to(x.dtype)


class EVA02Attention(nn.Module):
    """Multi-head self-attention with rotary q/k; q and v have biases, k has none.

    Plain softmax attention, as the official CPU path (``xattn`` off): bit-identical to the reference, whereas
    ``F.scaled_dot_product_attention`` differs by ~1e-5 on the Pro fixture.
    """

    def __init__(self, dim: int, num_heads: int, rope: VisionRotaryEmbedding, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.rope = rope
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, H, W, C] -> [B, H, W, C], attention over all H*W tokens of each item."""
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        q = F.linear(tokens, self.q_proj.weight, self.q_bias)
        k = F.linear(tokens, self.k_proj.weight)
        v = F.linear(tokens, self.v_proj.weight, self.v_bias)
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
        q, k = self.rope(q) * self.scale, self.rope(k)
        out = (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, h * w, c)).reshape(b, h, w, c)


class SwiGLU(nn.Module):
    """``w3(LayerNorm(silu(w1 x) * w2 x))`` (official SwiGLU with ``subln``)."""

    def __init__(self, dim: int, hidden_dim: int, eps: float = 1e-6):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim)
        self.w2 = nn.Linear(dim, hidden_dim)
        self.ffn_ln = nn.LayerNorm(hidden_dim, eps=eps)
        self.w3 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * nWh * nWw, ws, ws, C], zero-padding H and W on the bottom/right to window multiples."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window_size, (-w) % window_size
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    nh, nw = (h + pad_h) // window_size, (w + pad_w) // window_size
    x = x.reshape(b, nh, window_size, nw, window_size, c).transpose(2, 3)
    return x.reshape(b * nh * nw, window_size, window_size, c)


def window_unpartition(windows: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: windows -> [batch, height, width, C], padding removed."""
    window_size, c = windows.shape[1], windows.shape[-1]
    nh, nw = -(-height // window_size), -(-width // window_size)
    x = windows.reshape(batch, nh, nw, window_size, window_size, c).transpose(2, 3)
    return x.reshape(batch, nh * window_size, nw * window_size, c)[:, :height, :width]


class EVA02Block(nn.Module):
    """Pre-norm transformer block; window attention when ``window_size`` > 0, else global attention.

    Stochastic depth (training only) is not implemented: it is the identity at inference.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, window_size: int,
        rope: VisionRotaryEmbedding, eps: float = 1e-6,
    ):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EVA02Attention(dim, num_heads, rope, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = SwiGLU(dim, int(dim * mlp_ratio), eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, H, W, C] -> [B, H, W, C]."""
        y = self.norm1(x)
        if self.window_size > 0:
            b, h, w, _ = y.shape
            y = window_unpartition(self.attn(window_partition(y, self.window_size)), b, h, w)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: [B, C, H, W] -> [B, H // p, W // p, embed_dim] (channels last)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class EVA02ViT(nn.Module):
    """The plain EVA02 transformer (official ``EVA02_ViT``): images [B, 3, H, W] -> [B, embed_dim, H/p, W/p].

    ``pos_embed`` holds a (pretrain_img_size / patch_size)^2 grid plus a class-token row (dropped at use) and is
    resized bicubically to the token grid. ``rope_win`` / ``rope_glb`` are shared by the window / global blocks
    (each block's ``attn.rope`` is one of them).
    """

    def __init__(
        self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, depth: int, num_heads: int,
        mlp_ratio: float, qkv_bias: bool, window_size: int, window_block_indexes: tuple[int, ...],
        pretrain_img_size: int, pt_hw_seq_len: int,
    ):
        super().__init__()
        if embed_dim % num_heads or (embed_dim // num_heads) % 4:
            raise ValueError(f"embed_dim {embed_dim} / num_heads {num_heads} must give a head dim divisible by 4")
        if window_block_indexes and window_size <= 0:
            raise ValueError("window_block_indexes given but window_size is not positive")
        self.in_chans = in_chans
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, (pretrain_img_size // patch_size) ** 2 + 1, embed_dim))
        half_head_dim = embed_dim // num_heads // 2
        self.rope_win = VisionRotaryEmbedding(half_head_dim, pt_hw_seq_len, window_size)
        self.rope_glb = VisionRotaryEmbedding(half_head_dim, pt_hw_seq_len, img_size // patch_size)
        self.blocks = nn.ModuleList(
            EVA02Block(
                embed_dim, num_heads, mlp_ratio, qkv_bias,
                window_size=window_size if i in window_block_indexes else 0,
                rope=self.rope_win if i in window_block_indexes else self.rope_glb,
            )
            for i in range(depth)
        )

    def abs_pos(self, height: int, width: int) -> torch.Tensor:
        """The position embedding without its class-token row, resized to [1, height, width, C]."""
        table = self.pos_embed[:, 1:]
        size = math.isqrt(table.shape[1])
        grid = table.reshape(1, size, size, -1)
        if (size, size) == (height, width):
            return grid
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, in_chans, H, W] -> features [B, embed_dim, H // patch, W // patch]."""
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"expected images [B, {self.in_chans}, H, W], got {tuple(images.shape)}")
        x = self.patch_embed(images)
        x = x + self.abs_pos(x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)


def pyramid_stage(dim: int, out_channels: int, scale: float) -> nn.Sequential:
    """One ``simfp`` stage: rescale the ViT map by ``scale`` (4, 2, 1 or 0.5), then 1x1 and 3x3 convs + LayerNorms."""
    if scale == 4.0:
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            LayerNorm2d(dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        ]
        dim = dim // 4
    elif scale == 2.0:
        layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
        dim = dim // 2
    elif scale == 1.0:
        layers = []
    elif scale == 0.5:
        layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
    else:
        raise ValueError(f"scale factor {scale} not supported; use 4.0, 2.0, 1.0 or 0.5")
    layers += [
        Conv2dNorm(dim, out_channels, kernel_size=1, bias=False, norm=LayerNorm2d(out_channels)),
        Conv2dNorm(out_channels, out_channels, kernel_size=3, padding=1, bias=False, norm=LayerNorm2d(out_channels)),
    ]
    return nn.Sequential(*layers)


@register_backbone("eva02")
class D2EVA02(Backbone):
    """EVA02 ViT + simple feature pyramid (official ``D2_EVA02``); defaults are the GLEE Pro (EVA02-L) preset.

    forward(images [B, 3, H, W]) -> {"p3": [B, 256, H/8, W/8], "p4": H/16, "p5": H/32, "p6": H/64} (sizes rounded
    as the official convs/pools round them). Module names: ``net.*`` (the ViT) and ``simfp_<log2 stride>.*``.
    """

    def __init__(
        self,
        img_size: int = 1536,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4 * 2 / 3,
        qkv_bias: bool = True,
        window_size: int = 16,
        window_block_indexes: tuple[int, ...] = PRO_WINDOW_BLOCK_INDEXES,
        pretrain_img_size: int = 224,
        pt_hw_seq_len: int = 16,
        out_channels: int = 256,
        scale_factors: tuple[float, ...] = (2.0, 1.0, 0.5),
    ):
        super().__init__()
        strides = [int(patch_size / scale) for scale in scale_factors]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"scale_factors {scale_factors} must give strides doubling from level to level")
        self.stage_names: list[str] = []
        for scale, stride in zip(scale_factors, strides):
            stage = int(math.log2(stride))
            self.add_module(f"simfp_{stage}", pyramid_stage(embed_dim, out_channels, scale))
            self.stage_names.append(f"p{stage}")
        self.net = EVA02ViT(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, window_size=window_size,
            window_block_indexes=tuple(window_block_indexes), pretrain_img_size=pretrain_img_size,
            pt_hw_seq_len=pt_hw_seq_len,
        )
        top = f"p{int(math.log2(strides[-1])) + 1}"
        self.out_features = self.stage_names + [top]
        self.out_strides = {name: 2 ** int(name[1:]) for name in self.out_features}
        self.out_channels = {name: out_channels for name in self.out_features}

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B, 3, H, W] (normalised) -> {p3..p6: [B, out_channels, h, w]}, finest first."""
        features = self.net(images)
        outputs = {name: getattr(self, f"simfp_{name[1:]}")(features) for name in self.stage_names}
        outputs[self.out_features[-1]] = F.max_pool2d(outputs[self.stage_names[-1]], kernel_size=1, stride=2)
        return outputs
