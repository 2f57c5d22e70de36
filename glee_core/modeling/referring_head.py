"""Referring head: re-scores GLEE's queries for a referring expression, with a "no such object" choice.

GLEE scores a query for an expression by one dot product between the query and the *mean* of the
expression's tokens, which loses word order: relations ("the star left of the red circle"), orders ("the
second circle from the left") and extremes ("the smallest square") are decided by comparing objects, which one
dot product cannot do. An optional :class:`ReferringHead` (``GleeConfig.referring_head``; not part of the
official checkpoints, which run without it) reads every query of the referring forward together with the
expression's tokens and picks one of ``Q + 1`` choices: a query, or "none" (choice 0).

Per query it sees (:func:`referring_head_inputs`): the final decoder state [C], the box (cxcywh in [0, 1] of
the padded input), GLEE's own referring logit, the objectness logit and the mean colour of the (normalised)
image under the soft mask; the box also as sines and cosines of its coordinates (:func:`box_encoding`). Layers:
queries (and a learned "none" token) attend to each other and to the expression's tokens (pre-norm transformer
decoder layers), then a linear score per choice. The attention between queries gets a bias per layer and head
from the pair's relative geometry (:func:`pairwise_geometry`, through a small MLP), so that "left of", "the
second from the top" and "the largest" are comparisons the layers can make directly.

``GleeModel`` applies it in eval mode to referring prompts given as text: ``pred_logits`` becomes ``logit(p_q)``
with ``p_q`` the softmax probability of query ``q`` among the ``Q + 1`` choices, so instance inference and the
predictor read it like GLEE's own logit, and ``1 - p_none`` is the probability that the object is there. It is
trained on a frozen model by :mod:`train.glee.referring_head` (``gleekit train referring-head``). In train mode,
and for prompts given as embeddings (an LLM's ``[SEG]`` states), the model gives GLEE's own logits: training
GLEE further leaves the head as it was, so retrain the head afterwards.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glee_core.config import ReferringHeadConfig

REGION_POOL = 4  # masks are at stride 4 of the padded input
EXTRA_FEATURES = 4 + 1 + 1 + 3  # box, referring logit, objectness logit, mean colour
BOX_FREQUENCIES = 8  # sine / cosine encoding of each box coordinate at pi * 2**k, k < 8
GEOMETRY_HIDDEN = 32


def region_colours(images: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mean colour of ``images`` [B, 3, Hp, Wp] under each soft mask (``sigmoid`` of ``mask_logits`` [B, Q, Hp/4,
    Wp/4]) -> [B, Q, 3], in the images' units."""
    pooled = F.avg_pool2d(images.float(), REGION_POOL)
    if pooled.shape[-2:] != mask_logits.shape[-2:]:
        raise ValueError(f"masks of {tuple(mask_logits.shape[-2:])} do not match images of "
                         f"{tuple(images.shape[-2:])} at stride {REGION_POOL}")
    weights = mask_logits.float().sigmoid()
    total = torch.einsum("bqhw,bchw->bqc", weights, pooled)
    return total / weights.sum((-2, -1)).clamp_min(1e-6)[..., None]


def referring_head_inputs(query_embeds: torch.Tensor, boxes: torch.Tensor, logits: torch.Tensor,
                          objectness: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Per-query input of the head: [B, Q, C + 9] from query states [B, Q, C], boxes [B, Q, 4] (cxcywh),
    referring logits [B, Q, 1], objectness logits [B, Q, 1] and mean colours [B, Q, 3]."""
    return torch.cat([query_embeds.float(), boxes.float(), logits.float(), objectness.float(), colours.float()], -1)


def box_encoding(boxes: torch.Tensor, frequencies: int = BOX_FREQUENCIES) -> torch.Tensor:
    """Boxes [..., 4] (cxcywh in [0, 1]) -> [..., 4 * 2 * frequencies]: sin and cos of each coordinate times
    ``pi * 2**k``."""
    scales = torch.pi * 2.0 ** torch.arange(frequencies, device=boxes.device, dtype=torch.float32)
    angles = boxes.float()[..., None] * scales
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)


def pairwise_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [B, Q, 4] (cxcywh) -> [B, Q, Q, 4]: for query i (rows) and j, ``cx_j - cx_i``, ``cy_j - cy_i``,
    ``log(w_j / w_i)`` and ``log(h_j / h_i)``."""
    centres, sizes = boxes[..., :2].float(), boxes[..., 2:].float().clamp_min(1e-3).log()
    return torch.cat([centres[:, None] - centres[:, :, None], sizes[:, None] - sizes[:, :, None]], -1)


class ReferringHead(nn.Module):
    """Scores ``Q`` queries and "none" for one expression per image (module docstring)."""

    def __init__(self, query_dim: int, text_dim: int, config: ReferringHeadConfig):
        super().__init__()
        dim = config.dim
        self.query_dim, self.heads = query_dim, config.heads
        self.query_in = nn.Sequential(nn.Dropout(config.dropout),
                                      nn.Linear(query_dim + EXTRA_FEATURES + 8 * BOX_FREQUENCIES, dim), nn.GELU(),
                                      nn.Linear(dim, dim))
        self.geometry = nn.Sequential(nn.Linear(4, GEOMETRY_HIDDEN), nn.GELU(),
                                      nn.Linear(GEOMETRY_HIDDEN, config.layers * config.heads))
        self.text_in = nn.Linear(text_dim, dim)
        self.none_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(dim, config.heads, 4 * dim, dropout=config.dropout, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(config.layers))
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, queries: torch.Tensor, text: torch.Tensor, text_valid: torch.Tensor) -> torch.Tensor:
        """``queries`` [B, Q, C + 9] (:func:`referring_head_inputs`), ``text`` [B, L, T] expression tokens with
        ``text_valid`` [B, L] bool (True = a real token) -> choice logits [B, Q + 1], "none" first."""
        if queries.dim() != 3 or queries.shape[-1] != self.query_dim + EXTRA_FEATURES:
            raise ValueError(f"queries must be [B, Q, {self.query_dim + EXTRA_FEATURES}], got {tuple(queries.shape)}")
        if text.dim() != 3 or text_valid.shape != text.shape[:2] or text.shape[0] != queries.shape[0]:
            raise ValueError(f"text must be [B, L, T] with a [B, L] mask for B={queries.shape[0]}, got "
                             f"{tuple(text.shape)} and {tuple(text_valid.shape)}")
        dtype = self.score.weight.dtype
        boxes = queries[..., self.query_dim:self.query_dim + 4]
        x = self.query_in(torch.cat([queries, box_encoding(boxes)], -1).to(dtype))
        batch, count = x.shape[:2]
        x = torch.cat([self.none_token.expand(batch, -1, -1), x], 1)
        bias = self.geometry(pairwise_geometry(boxes).to(dtype))  # [B, Q, Q, layers * heads]
        bias = F.pad(bias.permute(0, 3, 1, 2), (1, 0, 1, 0))  # "none" gets no geometric bias
        bias = bias.reshape(batch, len(self.layers), self.heads, count + 1, count + 1)
        memory = self.text_in(text.to(dtype))
        for index, layer in enumerate(self.layers):
            x = layer(x, memory, tgt_mask=bias[:, index].flatten(0, 1), memory_key_padding_mask=~text_valid)
        return self.score(self.norm(x))[..., 0]


def choice_logits_to_query_logits(choices: torch.Tensor) -> torch.Tensor:
    """Choice logits [B, Q + 1] -> per-query logits [B, Q, 1] whose sigmoid is the query's softmax probability
    among the choices (``log p - log(1 - p)``, computed stably)."""
    log_p = choices.float().log_softmax(-1)
    query = log_p[:, 1:]
    return (query - torch.log1p(-query.exp().clamp(max=1 - 1e-7)))[..., None]


def referring_choice_loss(choices: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log`` of the total probability of the right choices: ``choices`` [B, Q + 1] logits,
    ``positives`` [B, Q + 1] bool (every query that hits the referent; only "none" when nothing does)."""
    if positives.shape != choices.shape or positives.dtype != torch.bool:
        raise ValueError(f"positives must be bool of shape {tuple(choices.shape)}, got {positives.dtype} "
                         f"{tuple(positives.shape)}")
    if not bool(positives.any(-1).all()):
        raise ValueError("every sample needs at least one right choice (choice 0 = none)")
    log_p = choices.float().log_softmax(-1)
    return -(log_p.masked_fill(~positives, float("-inf")).logsumexp(-1)).mean()
