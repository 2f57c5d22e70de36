"""Projectors between an LLM's embedding space and GLEE's prompt / object spaces.

* :class:`SegProjector` — the hidden state of a ``[SEG]`` token [N, H_llm] -> N referring prompts of L tokens
  [N, L, C_glee], the slot GLEE fills with a projected referring expression (LISA's ``text_hidden_fcs``,
  widened to L tokens).
* :class:`ObjectProjector` — GLEE object queries [.., K, C_glee] with their boxes [.., K, 4] (cxcywh in [0, 1])
  and scores [.., K] -> object tokens [.., K, H_llm] placed in the LLM's input (All-Seeing style).
* :class:`PointerHead` — a ``[SEG]`` state against the object tokens -> which object it means.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SegProjector(nn.Module):
    """``Linear(H, H) -> ReLU -> Linear(H, L*C)``: LISA's projector with ``num_tokens`` (L) output tokens."""

    def __init__(self, llm_hidden: int, prompt_dim: int, num_tokens: int = 1):
        super().__init__()
        if min(llm_hidden, prompt_dim, num_tokens) < 1:
            raise ValueError(f"SegProjector sizes must be >= 1, got llm_hidden={llm_hidden}, "
                             f"prompt_dim={prompt_dim}, num_tokens={num_tokens}")
        self.num_tokens, self.prompt_dim = num_tokens, prompt_dim
        self.mlp = nn.Sequential(nn.Linear(llm_hidden, llm_hidden), nn.ReLU(),
                                 nn.Linear(llm_hidden, num_tokens * prompt_dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H_llm] -> [N, L, C_glee]."""
        if hidden.dim() != 2 or hidden.shape[1] != self.mlp[0].in_features:
            raise ValueError(f"SegProjector expects [N, {self.mlp[0].in_features}], got {tuple(hidden.shape)}")
        return self.mlp(hidden).view(hidden.shape[0], self.num_tokens, self.prompt_dim)


class ObjectProjector(nn.Module):
    """Object query (C), region features (R: what lies under the mask), box (cx, cy, w, h) and score -> one LLM
    token: ``MLP(LayerNorm([query, region])) + Linear(box, score)``.

    A two-layer GELU MLP as in LLaVA-1.5's projector; region pooling (All-Seeing, Osprey) gives the token the
    object's appearance, and the geometry enters through its own linear map so an LLM can tell two
    look-alike objects apart by where they are.
    """

    def __init__(self, query_dim: int, llm_hidden: int, region_dim: int = 0):
        super().__init__()
        self.query_dim, self.region_dim = query_dim, region_dim
        self.content = nn.Sequential(nn.LayerNorm(query_dim + region_dim), nn.Linear(query_dim + region_dim, llm_hidden),
                                     nn.GELU(), nn.Linear(llm_hidden, llm_hidden))
        self.geometry = nn.Linear(5, llm_hidden)

    def forward(self, queries: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
                regions: torch.Tensor | None = None) -> torch.Tensor:
        """queries [..., K, C], boxes [..., K, 4] cxcywh in [0, 1], scores [..., K] in [0, 1], regions [..., K, R]
        (when built with ``region_dim`` R > 0) -> [..., K, H_llm]."""
        if queries.shape[-1] != self.query_dim:
            raise ValueError(f"ObjectProjector expects queries [..., K, {self.query_dim}], got {tuple(queries.shape)}")
        if boxes.shape != (*queries.shape[:-1], 4) or scores.shape != queries.shape[:-1]:
            raise ValueError(f"boxes must be {[*queries.shape[:-1], 4]} and scores {list(queries.shape[:-1])}, got "
                             f"{list(boxes.shape)} and {list(scores.shape)}")
        if self.region_dim:
            if regions is None or regions.shape != (*queries.shape[:-1], self.region_dim):
                raise ValueError(f"regions must be {[*queries.shape[:-1], self.region_dim]}, got "
                                 f"{None if regions is None else list(regions.shape)}")
            queries = torch.cat([queries, regions.to(queries.dtype)], dim=-1)
        geometry = torch.cat([boxes, scores.unsqueeze(-1)], dim=-1).to(queries.dtype)
        return self.content(queries) + self.geometry(geometry)


class PointerHead(nn.Module):
    """How strongly a ``[SEG]`` state points at each object token: scaled cosine similarity of two projections.

    ``logits[n, k] = exp(t) * <normalize(Wq h_n), normalize(Wk c_{n,k})>``, with a learned temperature ``t``
    (CLIP's ``logit_scale``, initialised at ln 10): cosine logits reach a useful range from the first step,
    where raw dot products of small embeddings would need many steps to grow.
    """

    def __init__(self, llm_hidden: int, dim: int | None = None):
        super().__init__()
        dim = dim or llm_hidden
        self.query, self.key = nn.Linear(llm_hidden, dim), nn.Linear(llm_hidden, dim)
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(10.0)))  # [1]: DeepSpeed cannot broadcast 0-dim

    def forward(self, states: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """states [N, H], objects [N, K, H] (each state's candidate object tokens) -> logits [N, K]."""
        q = nn.functional.normalize(self.query(states), dim=-1)
        k = nn.functional.normalize(self.key(objects), dim=-1)
        return torch.einsum("nd,nkd->nk", q, k) * self.logit_scale.exp().clamp(max=100.0)
