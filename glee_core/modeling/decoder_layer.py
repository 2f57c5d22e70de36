"""DINO-style deformable transformer decoder of GLEE's object decoder (``predictor.decoder``).

``DeformableTransformerDecoderLayer`` is one post-norm layer: self-attention over the queries (optionally
joined by prompt tokens), multi-scale deformable cross-attention into the memory, FFN.
``TransformerDecoder`` stacks the layers with DINO's anchor-box refinement: the query position comes from
``ref_point_head`` applied to a sine embedding of the current reference box, and after each layer the
reference is refined by the (shared) box MLP ``bbox_embed[l]``.

All tensors are batch-first here ([B, N, C]); the official code is sequence-first, which does not change
any value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .layers import MLP, inverse_sigmoid
from .ms_deform_attn import MSDeformAttn, xavier_init_with_deformable_


@dataclass
class PromptTokens:
    """Prompt tokens that join the decoder self-attention.

    ``tokens`` [B, P, C]; ``pad_mask`` [B, P] bool, True marks a padded (invalid) token.
    """

    tokens: torch.Tensor
    pad_mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 3:
            raise ValueError(f"prompt tokens must be [B, P, C], got shape {tuple(self.tokens.shape)}")
        if self.pad_mask.shape != self.tokens.shape[:2] or self.pad_mask.dtype != torch.bool:
            raise ValueError(
                f"prompt pad_mask must be a bool [B, P] = {tuple(self.tokens.shape[:2])} tensor, "
                f"got {self.pad_mask.dtype} {tuple(self.pad_mask.shape)}"
            )


def prompt_self_attn_mask(
    num_queries: int, prompt_pad_mask: torch.Tensor, num_heads: int, query_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Boolean self-attention mask (True = blocked) over ``[queries; prompt tokens]``.

    Padded prompt tokens are hidden from the queries and do not see the queries; prompt tokens always see
    each other. ``query_mask`` [Q, Q] (denoising groups) fills the query block.
    Returns [B * num_heads, Q + P, Q + P], batch-major as ``nn.MultiheadAttention`` expects.
    """
    batch, num_prompt = prompt_pad_mask.shape
    size = num_queries + num_prompt
    mask = torch.zeros(batch, size, size, dtype=torch.bool, device=prompt_pad_mask.device)
    if query_mask is not None:
        mask[:, :num_queries, :num_queries] = query_mask
    mask[:, :num_queries, num_queries:] = prompt_pad_mask[:, None, :]
    mask[:, num_queries:, :num_queries] = prompt_pad_mask[:, :, None]
    return mask.repeat_interleave(num_heads, dim=0)


def sine_embed_boxes(boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """DINO sine embedding of boxes [..., 4] (cx, cy, w, h in [0, 1]) -> [..., 4 * num_feats], order (y, x, w, h)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    embeds = []
    for coord in (1, 0, 2, 3):
        pos = boxes[..., coord, None].float() * (2 * math.pi) / dim_t
        embeds.append(torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(embeds, dim=-1).to(boxes.dtype)


class DeformableTransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attn (``norm2``) -> deformable cross-attn (``norm1``) -> FFN (``norm3``)."""

    def __init__(self, *, d_model: int = 256, d_ffn: int = 1024, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4):
        super().__init__()
        self.n_heads = n_heads
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def self_attention(self, tgt: torch.Tensor, query_pos: torch.Tensor, attn_mask: torch.Tensor | None,
                       prompt: PromptTokens | None) -> torch.Tensor:
        """Residual self-attention over the queries [B, Q, C].

        With a prompt, the attention runs over ``[queries; prompt tokens]``; a prompt token's positional
        embedding is the token itself (q = k = 2 * token, v = token) and only the query rows are kept.
        """
        if prompt is None:
            q = tgt + query_pos
            out = self.self_attn(q, q, tgt, attn_mask=attn_mask, need_weights=False)[0]
            return self.norm2(tgt + out)
        num_queries = tgt.shape[1]
        mask = prompt_self_attn_mask(num_queries, prompt.pad_mask, self.n_heads, attn_mask)
        tokens = prompt.tokens.to(tgt.dtype)
        value = torch.cat([tgt, tokens], dim=1)
        q = torch.cat([tgt + query_pos, tokens + tokens], dim=1)
        out = self.self_attn(q, q, value, attn_mask=mask, need_weights=False)[0]
        return self.norm2(value + out)[:, :num_queries]

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                memory: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, *,
                self_attn_mask: torch.Tensor | None = None, prompt: PromptTokens | None = None,
                shared: dict | None = None) -> torch.Tensor:
        """tgt, query_pos [B, Q, C]; reference_points [B, Q, n_levels, 4] (sigmoid space); memory [B, S, C];
        self_attn_mask [Q, Q] bool (True = blocked) or None; ``shared``: the cross-attention's per-memory cache
        (:class:`MSDeformAttn`). Returns [B, Q, C]."""
        tgt = self.self_attention(tgt, query_pos, self_attn_mask, prompt)
        out = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index,
                              shared=shared)
        tgt = self.norm1(tgt + out)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class TransformerDecoder(nn.Module):
    """DINO decoder: ``layers``, the output ``norm`` (shared with the predictor's ``decoder_norm``),
    ``ref_point_head`` and the per-layer box MLPs ``bbox_embed`` (all one shared MLP in GLEE)."""

    def __init__(self, *, layers: list[DeformableTransformerDecoderLayer], norm: nn.LayerNorm,
                 bbox_embed: nn.ModuleList, d_model: int = 256):
        super().__init__()
        if len(bbox_embed) != len(layers):
            raise ValueError(f"need one box MLP per layer: {len(bbox_embed)} for {len(layers)} layers")
        self.d_model = d_model
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self._reset_parameters()
        self.bbox_embed = bbox_embed

    def _reset_parameters(self) -> None:
        """Official init of the layers and ``ref_point_head``: Xavier-uniform matrices, then the deformable
        attention's own init."""
        xavier_init_with_deformable_(self)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, refpoints_unsigmoid: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, *,
                self_attn_mask: torch.Tensor | None = None,
                layer_prompts: list[PromptTokens | None] | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """tgt [B, Q, C]; memory [B, S, C]; refpoints_unsigmoid [B, Q, 4]; ``layer_prompts``: the prompt of
        each layer (or None).

        Returns (hs, references): hs = ``norm(output)`` of every layer, L x [B, Q, C]; references = the
        initial reference and the refined one after every layer, (L + 1) x [B, Q, 4] in sigmoid space. The
        refinement uses the box MLP on the *raw* layer output.
        """
        if layer_prompts is not None and len(layer_prompts) != len(self.layers):
            raise ValueError(f"need one prompt entry per layer: {len(layer_prompts)} for {len(self.layers)} layers")
        num_levels = spatial_shapes.shape[0]
        output = tgt
        reference = refpoints_unsigmoid.sigmoid()
        references = [reference]
        hs = []
        shared: dict = {}  # the layers' cross-attentions all read ``memory``: what they derive from it, once
        for layer_id, layer in enumerate(self.layers):
            query_pos = self.ref_point_head(sine_embed_boxes(reference, num_feats=self.d_model // 2))
            output = layer(
                output, query_pos, reference[:, :, None].expand(-1, -1, num_levels, -1), memory, spatial_shapes,
                level_start_index, self_attn_mask=self_attn_mask,
                prompt=None if layer_prompts is None else layer_prompts[layer_id], shared=shared,
            )
            new_reference = (self.bbox_embed[layer_id](output) + inverse_sigmoid(reference)).sigmoid()
            reference = new_reference.detach()
            references.append(new_reference)
            hs.append(self.norm(output))
        return hs, references
