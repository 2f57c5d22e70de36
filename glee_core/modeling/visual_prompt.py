"""Visual prompts of GLEE: prompt masks, the template branch and the per-level spatial prompt tokens.

A visual prompt is a bool mask over the padded network input, one per image: ``[1, Hp, Wp]`` from the
builders here, ``[B, Hp, Wp]`` when batched (``torch.cat``). All coordinates are pixels of the
network-input (resized, unpadded) image of size ``image_hw``; the padding stays zero.

* *Template branch* (early fusion): the image (plus the mask, for point and scribble prompts) is cropped
  around the mask's box, resized to 256x256, run through the backbone, and ``FeatureFuser`` turns the
  last three levels into 32x32 = 1024 tokens of width 256 (for a stride-8 finest fused level).
* *Spatial prompt tokens* (decoder self-attention): for each pixel-decoder level ``l``, the prompt pixels
  are sampled from ``multi_scale_features[l] @ mask_sptial_embed[l]`` and ``pn_indicator.weight[0]`` is
  added (the official negative-prompt set is always empty at inference).

GleeModel owns the parameters (``sot_fuser``, ``mask_sptial_embed``, ``pn_indicator``); the functions
here take them as arguments.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F

PromptMode = Literal["box", "point", "scribble", "mask"]
PROMPT_MODES: tuple[str, ...] = get_args(PromptMode)
TEMPLATE_SIZE = 256
MAX_PROMPT_POINTS = 512
_MODES_ADDING_MASK = ("point", "scribble")


def _check_sizes(image_hw: Sequence[int], padded_hw: Sequence[int]) -> tuple[int, int, int, int]:
    (h, w), (hp, wp) = (int(s) for s in image_hw), (int(s) for s in padded_hw)
    if h <= 0 or w <= 0 or hp < h or wp < w:
        raise ValueError(
            f"need 0 < image_hw <= padded_hw, got image_hw={tuple(image_hw)}, padded_hw={tuple(padded_hw)}")
    return h, w, hp, wp


def prompt_mask_from_box(box_xyxy: Sequence[float], image_hw: Sequence[int], padded_hw: Sequence[int],
                         device: torch.device | None = None) -> torch.Tensor:
    """Box prompt -> bool mask [1, Hp, Wp] with ``mask[y1:y2, x1:x2]`` set (x2, y2 exclusive).

    Fractional coordinates are widened to whole pixels (floor x1/y1, ceil x2/y2). The box must lie inside
    the image and have x2 > x1, y2 > y1.
    """
    h, w, hp, wp = _check_sizes(image_hw, padded_hw)
    if len(box_xyxy) != 4:
        raise ValueError(f"box_xyxy must have 4 numbers, got {list(box_xyxy)}")
    x1, y1 = (math.floor(v) for v in box_xyxy[:2])
    x2, y2 = (math.ceil(v) for v in box_xyxy[2:])
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {list(box_xyxy)} is empty: need x2 > x1 and y2 > y1")
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        raise ValueError(f"box {list(box_xyxy)} lies outside the {w}x{h} (WxH) image")
    mask = torch.zeros(1, hp, wp, dtype=torch.bool, device=device)
    mask[:, y1:y2, x1:x2] = True
    return mask


def prompt_mask_from_point(point_xy: Sequence[float], image_hw: Sequence[int], padded_hw: Sequence[int],
                           device: torch.device | None = None) -> torch.Tensor:
    """Point prompt (cx, cy) -> bool mask [1, Hp, Wp]: ``mask[cy-H//40 : cy+H//40, cx-W//40 : cx+W//40]``.

    H, W = ``image_hw``; the half-sizes are at least 1 pixel. Deviation from the official demo: the window is
    clipped at the top/left border (the demo's negative slice start wraps and yields an empty mask there).
    """
    h, w, hp, wp = _check_sizes(image_hw, padded_hw)
    if len(point_xy) != 2:
        raise ValueError(f"point_xy must have 2 numbers, got {list(point_xy)}")
    cx, cy = (math.floor(v) for v in point_xy)
    if not (0 <= cx < w and 0 <= cy < h):
        raise ValueError(f"point {list(point_xy)} lies outside the {w}x{h} (WxH) image")
    dy, dx = max(1, h // 40), max(1, w // 40)
    mask = torch.zeros(1, hp, wp, dtype=torch.bool, device=device)
    mask[:, max(0, cy - dy):min(h, cy + dy), max(0, cx - dx):min(w, cx + dx)] = True
    return mask


def prompt_mask_from_mask(mask: torch.Tensor, padded_hw: Sequence[int]) -> torch.Tensor:
    """Scribble or mask prompt [h, w] (nonzero = prompt) on the input image -> bool mask [1, Hp, Wp]."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [h, w], got shape {tuple(mask.shape)}")
    h, w, hp, wp = _check_sizes(mask.shape, padded_hw)
    if not bool(mask.any()):
        raise ValueError("mask prompt is empty")
    out = torch.zeros(1, hp, wp, dtype=torch.bool, device=mask.device)
    out[0, :h, :w] = mask != 0
    return out


def _check_prompt_masks(prompt_masks: torch.Tensor, padded_hw: Sequence[int] | None = None) -> None:
    if prompt_masks.dim() != 3 or prompt_masks.dtype != torch.bool:
        raise ValueError(f"prompt masks must be bool [B, Hp, Wp], got {prompt_masks.dtype} {tuple(prompt_masks.shape)}")
    if padded_hw is not None and tuple(prompt_masks.shape[-2:]) != tuple(padded_hw):
        raise ValueError(f"prompt masks are {tuple(prompt_masks.shape[-2:])}, images {tuple(padded_hw)}")
    if not bool(prompt_masks.flatten(1).any(1).all()):
        raise ValueError("a prompt mask is empty")


def mask_box_xywh(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a nonempty [H, W] mask as the official code computes it: w = x_max - x_min (inclusive ends)."""
    ys, xs = mask.nonzero(as_tuple=True)
    x, y = int(xs.min()), int(ys.min())
    return x, y, int(xs.max()) - x, int(ys.max()) - y


def template_crops(images: torch.Tensor, prompt_masks: torch.Tensor, mode: PromptMode) -> torch.Tensor:
    """Template crops [B, 3, 256, 256] of ``images`` [B, 3, Hp, Wp] (normalised, padded) around ``prompt_masks``.

    For point and scribble prompts the mask (1.0) is first added to every channel. The square crop has side
    ceil(2·sqrt(w·h)) and is centred on the mask box (Python ``round``, start clamped at 0, the end cut at the
    image border); an empty crop (degenerate box) falls back to the whole image. Resize: bilinear, no antialias.
    """
    if mode not in PROMPT_MODES:
        raise ValueError(f"mode must be one of {PROMPT_MODES}, got {mode!r}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, Hp, Wp], got shape {tuple(images.shape)}")
    _check_prompt_masks(prompt_masks, images.shape[-2:])
    if prompt_masks.shape[0] != images.shape[0]:
        raise ValueError(f"{prompt_masks.shape[0]} prompt masks for {images.shape[0]} images")
    crops = []
    for image, mask in zip(images, prompt_masks):
        if mode in _MODES_ADDING_MASK:
            image = image + mask.to(image.dtype)
        x, y, w, h = mask_box_xywh(mask)
        size = math.ceil(math.sqrt(w * h) * 2)
        x1 = max(0, round(x + 0.5 * w - size * 0.5))
        y1 = max(0, round(y + 0.5 * h - size * 0.5))
        crop = image[:, y1:y1 + size, x1:x1 + size]
        if crop.shape[-1] == 0 or crop.shape[-2] == 0:
            crop = image
        crops.append(F.interpolate(crop[None], (TEMPLATE_SIZE, TEMPLATE_SIZE), mode="bilinear", align_corners=False))
    return torch.cat(crops)


def aligned_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """CondInst's aligned upsampling of [B, C, h, w] by an integer ``factor`` -> [B, C, factor·h, factor·w].

    Replicate-pad one row/column at the bottom/right, bilinear resize (align_corners=True) to factor·size + 1,
    shift by factor // 2 (replicate-padded at the top/left) and crop.
    """
    if x.dim() != 4:
        raise ValueError(f"aligned_bilinear expects [B, C, h, w], got shape {tuple(x.shape)}")
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, :factor * h, :factor * w]


class FeatureFuser(nn.Module):
    """Sum of 3x3 convs (``refine.{0,1,2}``) of the last three backbone levels, upsampled to the finest of them.

    ``in_channels``: channels of those three levels, finest first (ResNet-50: 512/1024/2048; tiny: 64/128/256;
    Swin-L: 384/768/1536; EVA02-L: 256/256/256). forward(features, at least 3 maps [B, C_i, h_i, w_i] finest
    first, the last three are used) -> [B, channels, h, w] of the first used level.
    """

    def __init__(self, *, in_channels: Sequence[int], channels: int = 256):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"FeatureFuser fuses 3 levels, got in_channels={list(in_channels)}")
        self.refine = nn.ModuleList([nn.Conv2d(c, channels, 3, padding=1) for c in in_channels])

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) < 3:
            raise ValueError(f"FeatureFuser needs 3 feature maps, got {len(features)}")
        out = None
        for conv, feature in zip(self.refine, features[-3:]):
            if feature.dim() != 4 or feature.shape[1] != conv.in_channels:
                raise ValueError(f"expected a [B, {conv.in_channels}, h, w] map, got shape {tuple(feature.shape)}")
            y = conv(feature)
            if out is None:
                out = y
                continue
            factor = out.shape[-2] // y.shape[-2]
            if tuple(out.shape[-2:]) != (factor * y.shape[-2], factor * y.shape[-1]):
                raise ValueError(
                    f"cannot upsample {tuple(y.shape[-2:])} to {tuple(out.shape[-2:])} by one integer factor")
            out = out + aligned_bilinear(y, factor)
        return out


def template_tokens(backbone: nn.Module, fuser: FeatureFuser, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Template crops [B, 3, 256, 256] -> (ref_feats [B, L, 256], ref_masks [B, L] all True); L = 1024 for ResNet.

    The backbone runs without gradient, as in the official code; ``fuser`` takes its last three levels
    (``backbone.out_features`` order, finest first). The tokens keep the crops' dtype.
    """
    with torch.no_grad():
        levels = backbone(crops)
    fused = fuser([levels[name] for name in backbone.out_features])
    ref_feats = fused.flatten(2).transpose(1, 2)
    return ref_feats, torch.ones(ref_feats.shape[:2], dtype=torch.bool, device=ref_feats.device)


def prompt_points(prompt_masks: torch.Tensor, max_points: int = MAX_PROMPT_POINTS,
                  generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Prompt pixels of each mask [B, Hp, Wp] as float32 (y / Hp, x / Wp) rows [P_b, 2], in ``nonzero`` order.

    With more than ``max_points`` pixels, ``max_points`` of them are drawn by ``torch.randperm(P, generator=
    generator)`` (on the generator's device), in the drawn order, as the official ``rand_sample``; pass a
    seeded generator for reproducible results (``None``: the global CPU RNG, like the official code). With at
    most ``max_points`` pixels nothing random happens.
    """
    divisor = torch.tensor(prompt_masks.shape[-2:], dtype=torch.float32, device=prompt_masks.device)
    points = []
    for mask in prompt_masks:
        coords = mask.nonzero().float() / divisor
        if coords.shape[0] > max_points:
            device = None if generator is None else generator.device
            keep = torch.randperm(coords.shape[0], generator=generator, device=device)[:max_points]
            coords = coords[keep.to(coords.device)]
        points.append(coords)
    return points


def spatial_prompt_tokens(multi_scale_features: Sequence[torch.Tensor], prompt_masks: torch.Tensor,
                          spatial_embeds: Sequence[torch.Tensor], pn_indicator: torch.Tensor,
                          max_points: int = MAX_PROMPT_POINTS, generator: torch.Generator | None = None,
                          ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-level decoder prompt tokens of positive prompt masks [B, Hp, Wp].

    For level l (``multi_scale_features[l]`` [B, C, h_l, w_l], ``spatial_embeds[l]`` = ``mask_sptial_embed[l]``
    [C, C]): every prompt pixel (y/Hp, x/Wp) is sampled bilinearly with align_corners=True from
    ``features @ spatial_embeds[l]`` and ``pn_indicator[0]`` ([2, C] = ``pn_indicator.weight``) is added.
    Returns one (tokens [P, B, C] sequence first, pad_mask [B, P] True = padding) per level; P = the
    largest pixel count in the batch (capped at ``max_points``; see :func:`prompt_points`, drawn anew per level);
    padding tokens are the samples at (0, 0) without the indicator. The projection is applied after sampling
    (equal by linearity, and cheaper than projecting whole maps as the official code does).
    """
    _check_prompt_masks(prompt_masks)
    if len(spatial_embeds) < len(multi_scale_features):
        raise ValueError(f"{len(spatial_embeds)} spatial embeddings for {len(multi_scale_features)} levels")
    out = []
    for features, embed in zip(multi_scale_features, spatial_embeds):
        if features.dim() != 4 or features.shape[0] != prompt_masks.shape[0] or embed.shape != (features.shape[1],) * 2:
            raise ValueError(f"level features {tuple(features.shape)} do not fit {prompt_masks.shape[0]} prompts "
                             f"and a {tuple(embed.shape)} embedding")
        points = prompt_points(prompt_masks, max_points, generator)
        padded = nn.utils.rnn.pad_sequence(points, batch_first=True, padding_value=-1.0).to(features.device)
        pad_mask = padded.sum(-1) < 0
        padded = padded.masked_fill(pad_mask.unsqueeze(-1), 0.0).to(features.dtype)
        grid = (2.0 * padded.flip(-1) - 1.0).unsqueeze(2)
        sampled = F.grid_sample(features, grid, mode="bilinear", align_corners=True).squeeze(3)
        tokens = sampled.permute(2, 0, 1) @ embed
        tokens = tokens + (~pad_mask).T.unsqueeze(-1).to(tokens.dtype) * pn_indicator[0]
        out.append((tokens, pad_mask))
    return out
