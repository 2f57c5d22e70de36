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
    """Object query (C), region features (R, in parts: what lies under the mask), box (cx, cy, w, h) and score ->
    one LLM token: ``scale * rms_norm(Linear(GELU(sum_p Linear_p(LayerNorm_p(part_p)))) + Linear(box, score))``.

    LLaVA-1.5's two-layer GELU MLP over the query and the region parts (All-Seeing / Osprey region pooling gives
    the object's appearance), each part normalised and mapped on its own before the sum -- the same as one linear
    map of their concatenation, except that every part starts with an equal say whatever its width: under one
    shared LayerNorm the 3 mean-RGB channels among a few hundred features were drowned (a tiny LLM trained on
    captions named shapes 0.9 of the time and colours at chance, while an MLP on the 3 numbers alone names the
    colour 0.93 of the time). Parts listed in ``raw_parts`` skip their LayerNorm (mean RGB: normalising 3
    numbers would erase brightness). The geometry enters through its own linear map, so an LLM can tell two
    look-alike objects apart by where they are. The output is RMS-normalised and scaled by a learned ``scale``
    that starts at ``output_rms`` (give the RMS of the LLM's word embeddings): an object token then has a word's
    magnitude, so an ``<objK>`` mention that adds it to its own word embedding still reads as a mention.
    """

    def __init__(self, query_dim: int, llm_hidden: int, region_parts: tuple[int, ...] = (),
                 raw_parts: tuple[int, ...] = (), output_rms: float = 1.0):
        super().__init__()
        if output_rms <= 0:
            raise ValueError(f"output_rms must be > 0, got {output_rms}")
        if min(region_parts, default=1) < 1 or not set(raw_parts) <= set(range(len(region_parts))):
            raise ValueError(f"region_parts must be widths >= 1 and raw_parts indices into them, got "
                             f"{region_parts} and {raw_parts}")
        self.query_dim, self.region_parts = query_dim, tuple(region_parts)
        self.region_dim = sum(self.region_parts)
        raw = {index + 1 for index in raw_parts}  # input 0 is the query
        self.inputs = nn.ModuleList(
            nn.Sequential(nn.Identity() if index in raw else nn.LayerNorm(width), nn.Linear(width, llm_hidden))
            for index, width in enumerate((query_dim, *self.region_parts)))
        self.output = nn.Sequential(nn.GELU(), nn.Linear(llm_hidden, llm_hidden))
        self.geometry = nn.Linear(5, llm_hidden)
        self.scale = nn.Parameter(torch.full((1,), float(output_rms)))  # [1]: DeepSpeed cannot broadcast 0-dim

    def forward(self, queries: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
                regions: torch.Tensor | None = None) -> torch.Tensor:
        """queries [..., K, C], boxes [..., K, 4] cxcywh in [0, 1], scores [..., K] in [0, 1], regions [..., K, R]
        (when built with region parts, R = their sum) -> [..., K, H_llm]."""
        if queries.shape[-1] != self.query_dim:
            raise ValueError(f"ObjectProjector expects queries [..., K, {self.query_dim}], got {tuple(queries.shape)}")
        if boxes.shape != (*queries.shape[:-1], 4) or scores.shape != queries.shape[:-1]:
            raise ValueError(f"boxes must be {[*queries.shape[:-1], 4]} and scores {list(queries.shape[:-1])}, got "
                             f"{list(boxes.shape)} and {list(scores.shape)}")
        parts = [queries]
        if self.region_dim:
            if regions is None or regions.shape != (*queries.shape[:-1], self.region_dim):
                raise ValueError(f"regions must be {[*queries.shape[:-1], self.region_dim]}, got "
                                 f"{None if regions is None else list(regions.shape)}")
            parts += regions.to(queries.dtype).split(self.region_parts, dim=-1)
        hidden = sum(encode(part) for encode, part in zip(self.inputs, parts))
        geometry = torch.cat([boxes, scores.unsqueeze(-1)], dim=-1).to(queries.dtype)
        tokens = self.output(hidden) + self.geometry(geometry)
        return nn.functional.rms_norm(tokens, tokens.shape[-1:]) * self.scale


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
