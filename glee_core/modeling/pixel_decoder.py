"""GLEE's pixel decoder (MaskDINO ``MaskDINOEncoder``): deformable-attention encoder with early VL fusion + FPN step.

Data flow (``feature_order="low2high"``, the only order GLEE configs use):

1. Encoder levels: the ``transformer_in_features`` by increasing stride (res3, res4, res5 -> strides 8/16/32),
   each projected by ``input_proj.{i}`` (1x1 conv + GN(32)), then ``total_num_feature_levels - n`` extra levels
   from 3x3 stride-2 convs (+ GN), the first applied to the raw input feature with the most channels (res5),
   later ones to the previous extra level. With ``project_inputs=False`` (ViT backbones such as EVA02, whose
   p3..p6 are already ``conv_dim`` wide) the features go in unprojected and there are no extra levels.
2. Sine position embedding per level (+ ``transformer.level_embed``), flattened in that level order.
3. ``transformer.encoder``: ``VLFuse`` on the visual tokens before layer 0 only (``vl_layers = [VLFuse,
   Identity, ...]``), then post-norm deformable self-attention layers with a ReLU FFN. No padding mask is used:
   every valid ratio is 1, so padded pixels count as image content.
4. FPN: for the ``num_fpn_levels`` finest pixel-decoder inputs (res2 for ResNet/Swin, p3 for EVA02),
   ``layer_k(adapter_k(x) + bilinear(encoder level 0))``; ``mask_features`` (1x1 conv) of the last one gives the
   mask features (stride 4, or stride 8 for EVA02).

``multi_scale_features`` are the encoder levels in encoder order (strides 8, 16, 32, 64); the object decoder
reverses them itself.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .early_fusion import VLFuse
from .layers import Conv2dNorm, make_norm
from .ms_deform_attn import MSDeformAttn, xavier_init_with_deformable_
from .position_encoding import PositionEmbeddingSine


@dataclass
class PixelDecoderOutput:
    """Result of :class:`MaskDINOEncoder`.

    ``mask_features`` [B, mask_dim, H/s, W/s] (s = the finest input stride); ``multi_scale_features``: one
    [B, conv_dim, h_l, w_l] map per encoder level, encoder order; ``memory`` [B, S, conv_dim] the flattened encoder
    output; ``spatial_shapes`` [L, 2] int64 (h_l, w_l); ``level_start_index`` [L] int64; ``intermediates``
    (only with ``return_intermediates=True``): ``encoder.src.{l}`` / ``encoder.pos.{l}`` [B, conv_dim, h_l, w_l]
    (projected inputs, position embedding without level embed), ``encoder.vl0.visual_out`` [B, S, conv_dim] and
    ``encoder.vl0.lang_out`` [B, L, lang_dim] (the fusion output; absent without language input).
    """

    mask_features: torch.Tensor
    multi_scale_features: list[torch.Tensor]
    memory: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    intermediates: dict[str, torch.Tensor] | None = None


FFN_BLOCK = 2048  # tokens per block of the inference feed-forward (hidden 2048 x 2048 fp32 = 16 MB)


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: ``x = norm1(x + attn(x + pos))``, then ``x = norm2(x + linear2(relu(linear1(x))))``."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, n_levels: int, n_heads: int,
                 n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = dropout

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> torch.Tensor:
        """``src``, ``pos`` [B, S, C]; ``reference_points`` [B or 1, S, L, 2] -> [B, S, C]."""
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index)
        if self.training or torch.is_grad_enabled():
            src = self.norm1(src + F.dropout(attn, self.dropout, self.training))
            ffn = self.linear2(F.dropout(F.relu(self.linear1(src)), self.dropout, self.training))
            return self.norm2(src + F.dropout(ffn, self.dropout, self.training))
        # inference: the row-wise rest in blocks of tokens, so the [rows, dim_feedforward] hidden stays in cache
        out = torch.empty_like(src)
        for start in range(0, src.shape[1], FFN_BLOCK):
            rows = slice(start, start + FFN_BLOCK)
            block = self.norm1(src[:, rows] + attn[:, rows])
            out[:, rows] = self.norm2(block + self.linear2(F.relu(self.linear1(block), inplace=True)))
        return out


class DeformableEncoder(nn.Module):
    """``layers`` (deformable encoder layers) and ``vl_layers`` (``VLFuse`` before layer 0, Identity after)."""

    def __init__(self, num_layers: int, d_model: int, dim_feedforward: int, dropout: float, n_levels: int,
                 n_heads: int, n_points: int, lang_dim: int, fusion: dict | None = None):
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, dim_feedforward, dropout, n_levels, n_heads, n_points)
            for _ in range(num_layers))
        self.vl_layers = nn.ModuleList(
            [VLFuse(img_dim=d_model, lang_dim=lang_dim, **(fusion or {}))]
            + [nn.Identity() for _ in range(num_layers - 1)])

    @staticmethod
    def reference_points(spatial_shapes: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Pixel centres of every level in [0, 1], (x, y), shared by all levels: [1, S, L, 2] float32."""
        points = []
        for h, w in spatial_shapes.tolist():
            ref_y, ref_x = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                                          torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                                          indexing="ij")
            points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
        return torch.cat(points, 0)[None, :, None].expand(-1, -1, len(spatial_shapes), -1)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, lang: dict[str, torch.Tensor] | None,
                record: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """``src``, ``pos`` [B, S, C]; ``lang`` {"hidden": [B, L, lang_dim], "masks": [B, L] bool} or None."""
        reference_points = self.reference_points(spatial_shapes, src.device)
        lang_hidden = None if lang is None else lang["hidden"]
        for i, (layer, vl_layer) in enumerate(zip(self.layers, self.vl_layers)):
            if lang_hidden is not None and isinstance(vl_layer, VLFuse):
                # the fused language is read only by a later fusion layer (or a parity record)
                later = any(isinstance(m, VLFuse) for m in self.vl_layers[i + 1:])
                src, lang_hidden = vl_layer(src, lang_hidden, lang.get("masks"), with_language=later or record is not None)
                if record is not None:
                    record[f"encoder.vl{i}.visual_out"] = src
                    record[f"encoder.vl{i}.lang_out"] = lang_hidden
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index)
        return src


class EncoderOnlyTransformer(nn.Module):
    """``level_embed`` [L, C] and the ``encoder``: flattens the levels, adds level embeddings, runs the encoder."""

    def __init__(self, d_model: int, num_heads: int, num_encoder_layers: int, dim_feedforward: int,
                 dropout: float, num_feature_levels: int, num_points: int, lang_dim: int, fusion: dict | None = None):
        super().__init__()
        self.encoder = DeformableEncoder(num_encoder_layers, d_model, dim_feedforward, dropout, num_feature_levels,
                                         num_heads, num_points, lang_dim, fusion)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: xavier on every matrix, deformable-attention init, N(0, 1) level embeddings."""
        xavier_init_with_deformable_(self)
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[torch.Tensor], pos: list[torch.Tensor], lang: dict[str, torch.Tensor] | None,
                record: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``srcs``, ``pos``: per level [B, C, h, w] -> (memory [B, S, C], spatial_shapes [L, 2], level_start [L])."""
        spatial_shapes = torch.as_tensor([s.shape[-2:] for s in srcs], dtype=torch.long, device=srcs[0].device)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                              for lvl, p in enumerate(pos)], 1)
        memory = self.encoder(src_flat, pos_flat, spatial_shapes, level_start_index, lang, record)
        return memory, spatial_shapes, level_start_index


def _c2_xavier_fill(module: nn.Conv2d) -> None:
    """detectron2 ``c2_xavier_fill``: kaiming-uniform (a=1) weights, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class MaskDINOEncoder(nn.Module):
    """GLEE pixel decoder (see the module doc for the data flow and level order).

    Submodules (official names): ``input_proj`` (absent with ``project_inputs=False``), ``transformer``
    (``level_embed``, ``encoder.layers``, ``encoder.vl_layers``), ``pe_layer``, ``mask_features``,
    ``adapter_{k}`` / ``layer_{k}`` for the FPN levels.
    """

    def __init__(self, *, in_channels: dict[str, int], in_strides: dict[str, int],
                 transformer_in_features: Sequence[str] = ("res3", "res4", "res5"), conv_dim: int = 256,
                 mask_dim: int = 256, norm: str = "GN", num_heads: int = 8, num_points: int = 4,
                 dim_feedforward: int = 2048, num_encoder_layers: int = 6, total_num_feature_levels: int = 4,
                 common_stride: int = 4, feature_order: str = "low2high", project_inputs: bool = True,
                 lang_dim: int = 256, dropout: float = 0.0, fusion: dict | None = None):
        """``in_channels`` / ``in_strides``: every pixel-decoder input (e.g. res2..res5) -> channels / stride.

        ``transformer_in_features``: the subset fed to the deformable encoder. ``feature_order``: ``"low2high"``
        (encoder levels by increasing stride) or ``"high2low"`` (the reverse). ``project_inputs``: False for ViT
        backbones (official ``ViTBackbone``). ``lang_dim``: width of the early-fusion language tokens.
        ``fusion``: ``VLFuse`` keyword arguments (official: embed_dim 2048, 8 heads, dropout 0.1).
        """
        super().__init__()
        if set(in_channels) != set(in_strides):
            raise ValueError(f"in_channels {sorted(in_channels)} and in_strides {sorted(in_strides)} name "
                             "different features")
        missing = [f for f in transformer_in_features if f not in in_channels]
        if missing:
            raise ValueError(f"transformer_in_features {missing} are not among the inputs {sorted(in_channels)}")
        if feature_order not in ("low2high", "high2low"):
            raise ValueError(f"feature_order must be 'low2high' or 'high2low', got {feature_order!r}")
        num_backbone_levels = len(transformer_in_features)
        if total_num_feature_levels < num_backbone_levels:
            raise ValueError(f"total_num_feature_levels ({total_num_feature_levels}) < number of "
                             f"transformer_in_features ({num_backbone_levels})")

        self.in_channels = dict(in_channels)
        self.in_features = sorted(in_channels, key=lambda f: in_strides[f])
        self.feature_order = feature_order
        self.total_num_feature_levels = total_num_feature_levels
        self.project_inputs = project_inputs
        # Backbone levels in encoder order; official ties on channel count pick the first in its own order.
        by_stride = sorted(transformer_in_features, key=lambda f: in_strides[f])
        self.encoder_features = by_stride if feature_order == "low2high" else by_stride[::-1]
        official_order = by_stride[::-1] if feature_order == "low2high" else by_stride
        self.extra_level_source = max(official_order, key=lambda f: in_channels[f])
        num_extra = total_num_feature_levels - num_backbone_levels

        if project_inputs:
            projections = [nn.Sequential(nn.Conv2d(in_channels[f], conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
                           for f in self.encoder_features]
            extra_in = in_channels[self.extra_level_source]
            for _ in range(num_extra):
                projections.append(nn.Sequential(nn.Conv2d(extra_in, conv_dim, kernel_size=3, stride=2, padding=1),
                                                 nn.GroupNorm(32, conv_dim)))
                extra_in = conv_dim
            self.input_proj = nn.ModuleList(projections)
            for proj in self.input_proj:
                nn.init.xavier_uniform_(proj[0].weight, gain=1)
                nn.init.zeros_(proj[0].bias)
        else:
            wrong = {f: in_channels[f] for f in transformer_in_features if in_channels[f] != conv_dim}
            if num_extra or wrong:
                raise ValueError("project_inputs=False needs total_num_feature_levels == len(transformer_in_features) "
                                 f"and {conv_dim}-channel encoder inputs, got {total_num_feature_levels} levels and "
                                 f"channels {wrong}")

        self.transformer = EncoderOnlyTransformer(conv_dim, num_heads, num_encoder_layers, dim_feedforward, dropout,
                                                  total_num_feature_levels, num_points, lang_dim, fusion)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        _c2_xavier_fill(self.mask_features)

        min_stride = min(in_strides[f] for f in transformer_in_features)
        self.num_fpn_levels = max(int(math.log2(min_stride) - math.log2(common_stride)), 1)
        use_bias = norm == ""
        for k, feature in enumerate(self.in_features[:self.num_fpn_levels], start=1):
            adapter = Conv2dNorm(in_channels[feature], conv_dim, kernel_size=1, bias=use_bias,
                                 norm=make_norm(norm, conv_dim))
            layer = Conv2dNorm(conv_dim, conv_dim, kernel_size=3, padding=1, bias=use_bias,
                               norm=make_norm(norm, conv_dim), activation=F.relu)
            _c2_xavier_fill(adapter)
            _c2_xavier_fill(layer)
            self.add_module(f"adapter_{k}", adapter)
            self.add_module(f"layer_{k}", layer)

    def _check_inputs(self, features: dict[str, torch.Tensor], lang: dict[str, torch.Tensor] | None) -> None:
        for name, channels in self.in_channels.items():
            if name not in features:
                raise ValueError(f"missing backbone feature {name!r}; got {sorted(features)}")
            x = features[name]
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f"feature {name!r} must be [B, {channels}, H, W], got {tuple(x.shape)}")
        if lang is not None and "hidden" not in lang:
            raise ValueError(f"lang must hold 'hidden' [B, L, C] (and optionally 'masks'), got keys {sorted(lang)}")

    def _encoder_inputs(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Projected backbone levels and extra levels, in encoder order."""
        if not self.project_inputs:
            return [features[f] for f in self.encoder_features]
        n = len(self.encoder_features)
        srcs = [proj(features[f]) for proj, f in zip(self.input_proj, self.encoder_features)]
        extras = []
        x = features[self.extra_level_source]
        for proj in self.input_proj[n:]:
            x = proj(x)
            extras.append(x)
        return srcs + extras if self.feature_order == "low2high" else extras[::-1] + srcs

    def forward(self, features: dict[str, torch.Tensor], lang: dict[str, torch.Tensor] | None = None,
                return_intermediates: bool = False) -> PixelDecoderOutput:
        """``features``: {name: [B, C_name, H/s, W/s]} for every input; ``lang``: early-fusion tokens
        {"hidden": [B, L, lang_dim], "masks": [B, L] bool, True = valid} or None (no fusion)."""
        self._check_inputs(features, lang)
        record: dict[str, torch.Tensor] | None = {} if return_intermediates else None
        srcs = self._encoder_inputs(features)
        pos = [self.pe_layer(s) for s in srcs]
        if record is not None:
            for lvl, (s, p) in enumerate(zip(srcs, pos)):
                record[f"encoder.src.{lvl}"] = s
                record[f"encoder.pos.{lvl}"] = p
        memory, spatial_shapes, level_start_index = self.transformer(srcs, pos, lang, record)

        batch = memory.shape[0]
        sizes = spatial_shapes.prod(1).tolist()
        out = [z.transpose(1, 2).reshape(batch, -1, h, w)
               for z, (h, w) in zip(memory.split(sizes, dim=1), spatial_shapes.tolist())]
        num_levels = len(out)
        for k in range(self.num_fpn_levels, 0, -1):
            x = features[self.in_features[k - 1]]
            lateral = getattr(self, f"adapter_{k}")(x)
            coarser = out[0] if self.feature_order == "low2high" else out[-1]
            # the encoder level is a channels-last view of the memory; CPU bilinear upsampling of that layout runs
            # ~3x slower than of a plain copy (same values to ~5e-7 of N(0, 1) inputs, equally close to float64)
            y = lateral + F.interpolate(coarser.contiguous(), size=lateral.shape[-2:], mode="bilinear",
                                        align_corners=False)
            out.append(getattr(self, f"layer_{k}")(y))
        return PixelDecoderOutput(
            mask_features=self.mask_features(out[-1]),
            multi_scale_features=out[:num_levels],
            memory=memory,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            intermediates=record,
        )
