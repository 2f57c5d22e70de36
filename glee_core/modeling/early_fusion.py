"""Early vision-language fusion (GLIP-style bi-directional attention) run inside GLEE's pixel-decoder encoder.

Official quirk kept here: the language mask never masks anything. GLEE passes a bool mask and builds the bias
with ``mask.masked_fill(mask == 0, -9e15)`` *on the bool tensor*, which turns every entry into True; the
vision->language logits are then shifted by +1 everywhere, which softmax ignores. So padded language tokens
(the 77-position referring prompt) are attended like valid ones. ``mask_language=True`` applies the intended
-9e15 bias on padded tokens instead (vision->language only, as the official code meant).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LOGIT_CLAMP = 50000.0
MASKED_LOGIT = -9e15
GEMM_ATTENTION_KEYS = 4096  # heads x language tokens up to which plain GEMMs beat fused attention on the CPU
GEMM_ATTENTION_BLOCK = 2**20  # logits per block of vision tokens (4 MB in float32)


def _attend_summed_over_heads(v: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                              bias: torch.Tensor) -> torch.Tensor:
    """sum_h softmax(v keys_h' + bias_h) values_h for v [B, Nv, D], keys / values [B, H, Nl, D], bias
    [B, H, 1, Nl] -> [B, Nv, D], as two GEMMs over all heads at once per block of vision tokens.

    With few language tokens (H x Nl <= ``GEMM_ATTENTION_KEYS``) this is ~1.2-6x faster on the CPU than
    ``scaled_dot_product_attention`` per head (measured at 18,071 vision tokens: 3 tokens 74 -> 12 ms, 77 tokens
    132 -> 69 ms, 257 tokens 267 -> 225 ms); the fused attention stays faster for long vocabularies (5,049 tokens:
    4.3 s against 7.1 s).
    """
    batch, heads, num_l, dim = keys.shape
    keys, values = keys.reshape(batch, heads * num_l, dim), values.reshape(batch, heads * num_l, dim)
    bias = bias.reshape(batch, 1, heads * num_l)
    rows = max(1, GEMM_ATTENTION_BLOCK // (heads * num_l))
    out = []
    for start in range(0, v.shape[1], rows):
        logits = torch.baddbmm(bias, v[:, start:start + rows], keys.transpose(1, 2))
        probs = logits.view(batch, -1, heads, num_l).softmax(-1).view(batch, -1, heads * num_l)
        out.append(probs @ values)
    return torch.cat(out, dim=1)


class BiMultiHeadAttention(nn.Module):
    """Vision tokens attend to language tokens and vice versa, with shared logits ``q_v . k_l``.

    Parameters: ``v_proj``, ``l_proj`` (queries/keys), ``values_v_proj``, ``values_l_proj``,
    ``out_v_proj`` (embed -> v_dim), ``out_l_proj`` (embed -> l_dim).
    """

    def __init__(self, v_dim: int, l_dim: int, embed_dim: int, num_heads: int, dropout: float = 0.1,
                 mask_language: bool = False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.dropout = dropout
        self.mask_language = mask_language
        self.v_proj = nn.Linear(v_dim, embed_dim)
        self.l_proj = nn.Linear(l_dim, embed_dim)
        self.values_v_proj = nn.Linear(v_dim, embed_dim)
        self.values_l_proj = nn.Linear(l_dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, v_dim)
        self.out_l_proj = nn.Linear(embed_dim, l_dim)
        for proj in (self.v_proj, self.l_proj, self.values_v_proj, self.values_l_proj, self.out_v_proj,
                     self.out_l_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B*heads, T, head_dim]."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2).reshape(b * self.num_heads, t, -1)

    def _merge(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """[B*heads, T, head_dim] -> [B, T, E]."""
        t = x.shape[1]
        return x.view(batch, self.num_heads, t, self.head_dim).transpose(1, 2).reshape(batch, t, -1)

    def forward(self, v: torch.Tensor, l: torch.Tensor, lang_mask: torch.Tensor | None = None,
                with_language: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``v`` [B, Nv, v_dim], ``l`` [B, Nl, l_dim], ``lang_mask`` [B, Nl] True = valid token.

        Returns the updates (delta_v [B, Nv, v_dim], delta_l [B, Nl, l_dim], or None without ``with_language``:
        the language->vision half is then not computed). Without dropout (eval) this runs :meth:`_folded` when
        the logit clamp provably never binds, else the official computation.
        """
        if not (self.training and self.dropout) and not torch.jit.is_tracing():
            folded = self._folded(v, l, lang_mask, with_language)
            if folded is not None:
                return folded
        return self._official(v, l, lang_mask, with_language)

    def _language_bias(self, lang_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """[B, Nl] additive vision->language logit bias of ``mask_language`` (None when it does not apply)."""
        if lang_mask is None or not self.mask_language:
            return None
        return torch.zeros(lang_mask.shape, device=lang_mask.device, dtype=dtype).masked_fill(~lang_mask, MASKED_LOGIT)

    def _folded(self, v: torch.Tensor, l: torch.Tensor, lang_mask: torch.Tensor | None,
                with_language: bool = True) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The official attention with the vision-side projections folded into the (short) language side.

        Per head h, with ``W`` the projections' weights and ``b`` their biases (exact algebra):
        logits ``(v Wq_h' + bq_h) k_h'`` = ``v (k_h Wq_h)' + k_h bq_h``, where ``k_h bq_h`` is a per-token bias
        that only the vision->language softmax sees (constant along the vision axis); ``out_v_proj`` of the merged
        heads = sum_h ``P_h (vl_h Wo_h')``; and rows of ``P_l`` sum to 1, so ``P_l (v Wvv_h' + bvv_h)`` =
        ``(P_l v) Wvv_h' + bvv_h``. Both softmax-weighted sums then run over ``v`` itself, as fused
        ``scaled_dot_product_attention`` (or, for few language tokens, as blocked GEMMs over all heads at once:
        :func:`_attend_summed_over_heads`), so nothing of size [Nv, embed_dim] or [Nv, Nl] is ever stored whole
        and no [Nv, v_dim] x [v_dim, embed_dim] projection is computed. Same values as :meth:`_official` up to
        float rounding (the parity fixtures hold to 1e-4). Returns None when ``|logit| < LOGIT_CLAMP`` cannot be
        guaranteed (Cauchy-Schwarz bound on the row norms), where the official clamp could change the result.
        """
        batch, num_v, v_dim = v.shape
        num_l, heads, head_dim = l.shape[1], self.num_heads, self.head_dim
        key = self.l_proj(l).view(batch, num_l, heads, head_dim).transpose(1, 2) * self.scale  # [B, H, Nl, hd]
        key_v = key @ self.v_proj.weight.view(heads, head_dim, v_dim)  # [B, H, Nl, v_dim]
        key_bias = key @ self.v_proj.bias.view(heads, head_dim, 1)  # [B, H, Nl, 1]
        bound = (v.detach().norm(dim=-1).amax() * key_v.detach().norm(dim=-1).amax()
                 + key_bias.detach().abs().amax())
        if not bool(bound < LOGIT_CLAMP):
            return None
        vision_bias = key_bias.transpose(-1, -2)  # [B, H, 1, Nl]
        language_bias = self._language_bias(lang_mask, vision_bias.dtype)
        if language_bias is not None:
            vision_bias = vision_bias + language_bias[:, None, None, :]
        value_l = self.values_l_proj(l).view(batch, num_l, heads, head_dim).transpose(1, 2)
        value_out = value_l @ self.out_v_proj.weight.view(v_dim, heads, head_dim).permute(1, 2, 0)  # [B,H,Nl,v_dim]
        vision = v[:, None].expand(batch, heads, num_v, v_dim)
        vision_bias = vision_bias.to(v.dtype)
        if heads * num_l <= GEMM_ATTENTION_KEYS:
            delta_v = _attend_summed_over_heads(v, key_v, value_out, vision_bias)
        else:
            delta_v = F.scaled_dot_product_attention(vision, key_v, value_out, attn_mask=vision_bias, scale=1.0).sum(1)
        delta_v = delta_v + self.out_v_proj.bias
        if not with_language:
            return delta_v, None
        pooled = F.scaled_dot_product_attention(key_v, vision, vision, scale=1.0)  # [B, H, Nl, v_dim]
        out_l = pooled @ self.values_v_proj.weight.view(heads, head_dim, v_dim).transpose(-1, -2)
        out_l = out_l + self.values_v_proj.bias.view(heads, 1, head_dim)
        return delta_v, self.out_l_proj(out_l.transpose(1, 2).reshape(batch, num_l, heads * head_dim))

    def _official(self, v: torch.Tensor, l: torch.Tensor, lang_mask: torch.Tensor | None,
                  with_language: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The official computation (projections, clamps, dropout on both softmaxes)."""
        batch = v.shape[0]
        query = self._heads(self.v_proj(v) * self.scale)
        key = self._heads(self.l_proj(l))
        value_v = self._heads(self.values_v_proj(v)) if with_language else None
        value_l = self._heads(self.values_l_proj(l))
        bias = self._language_bias(lang_mask, query.dtype)
        if bias is not None:
            bias = bias.repeat_interleave(self.num_heads, dim=0)[:, None, :]  # [B*heads, 1, Nl]

        # one (image, head) slice at a time: the [Nv, Nl] logits of an LVIS-size vocabulary (18k x 5k) are
        # 360 MB each; every slice is computed exactly as the batched version would. Without autograd
        # recording, temporaries are updated in place (same values, less memory traffic).
        inplace = not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad))
        out_v, out_l = [], []
        for i in range(query.shape[0]):
            logits = query[i] @ key[i].T  # [Nv, Nl]
            logits = logits.clamp_(-LOGIT_CLAMP, LOGIT_CLAMP) if inplace else logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
            if with_language:
                out_l.append(self._language_slice(logits, value_v[i], inplace))
            if bias is not None:
                logits = logits + bias[i]
            probs_v = F.dropout(logits.softmax(dim=-1), p=self.dropout, training=self.training)
            out_v.append(probs_v @ value_l[i])
        out_v = self.out_v_proj(self._merge(torch.stack(out_v), batch))
        if not with_language:
            return out_v, None
        return out_v, self.out_l_proj(self._merge(torch.stack(out_l), batch))

    def _language_slice(self, logits: torch.Tensor, value_v: torch.Tensor, inplace: bool) -> torch.Tensor:
        """One slice of the official language->vision attention: logits [Nv, Nl], value_v [Nv, hd] -> [Nl, hd]."""
        logits_l = logits.T.contiguous()  # [Nl, Nv]: reductions over the vision axis on contiguous rows
        shift = logits_l.amax(dim=-1, keepdim=True)
        logits_l = logits_l.sub_(shift) if inplace else logits_l - shift
        logits_l = logits_l.clamp_(-LOGIT_CLAMP, LOGIT_CLAMP) if inplace else logits_l.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        probs_l = F.dropout(logits_l.softmax(dim=-1), p=self.dropout, training=self.training)
        return probs_l @ value_v


class BiAttentionBlock(nn.Module):
    """Pre-norm bi-directional attention with layer scale (official ``BiAttentionBlockForCheckpoint``).

    Returns ``(LN_v(v) + gamma_v * delta_v, LN_l(l) + gamma_l * delta_l)``: the residual is taken around the
    *normalised* inputs. Parameters: ``layer_norm_v``, ``layer_norm_l``, ``attn``, ``gamma_v``, ``gamma_l``.
    """

    def __init__(self, v_dim: int, l_dim: int, embed_dim: int, num_heads: int, dropout: float = 0.1,
                 init_values: float = 1e-4, mask_language: bool = False):
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(v_dim)
        self.layer_norm_l = nn.LayerNorm(l_dim)
        self.attn = BiMultiHeadAttention(v_dim, l_dim, embed_dim, num_heads, dropout=dropout,
                                         mask_language=mask_language)
        self.gamma_v = nn.Parameter(torch.full((v_dim,), init_values))
        self.gamma_l = nn.Parameter(torch.full((l_dim,), init_values))

    def forward(self, v: torch.Tensor, l: torch.Tensor, lang_mask: torch.Tensor | None = None,
                with_language: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``v`` [B, Nv, v_dim], ``l`` [B, Nl, l_dim], ``lang_mask`` [B, Nl] True = valid -> same shapes
        (the language output None without ``with_language``)."""
        v = self.layer_norm_v(v)
        l = self.layer_norm_l(l)
        delta_v, delta_l = self.attn(v, l, lang_mask, with_language)
        return v + self.gamma_v * delta_v, None if delta_l is None else l + self.gamma_l * delta_l


class VLFuse(nn.Module):
    """GLEE's early-fusion layer: one :class:`BiAttentionBlock` named ``b_attn`` (official sizes as defaults)."""

    def __init__(self, img_dim: int = 256, lang_dim: int = 256, embed_dim: int = 2048, num_heads: int = 8,
                 dropout: float = 0.1, init_values: float = 1.0 / 6, mask_language: bool = False):
        super().__init__()
        self.img_dim = img_dim
        self.lang_dim = lang_dim
        self.b_attn = BiAttentionBlock(img_dim, lang_dim, embed_dim, num_heads, dropout=dropout,
                                       init_values=init_values, mask_language=mask_language)

    def forward(self, visual: torch.Tensor, lang_hidden: torch.Tensor, lang_mask: torch.Tensor | None = None,
                with_language: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``visual`` [B, S, img_dim], ``lang_hidden`` [B, L, lang_dim], ``lang_mask`` [B, L] bool (True = valid).

        Returns the fused (visual [B, S, img_dim], language [B, L, lang_dim]); without ``with_language`` the
        language half is skipped and None returned in its place (GLEE's encoder never reads it).
        """
        if visual.dim() != 3 or visual.shape[-1] != self.img_dim:
            raise ValueError(f"visual must be [B, S, {self.img_dim}], got {tuple(visual.shape)}")
        if lang_hidden.dim() != 3 or lang_hidden.shape[-1] != self.lang_dim or lang_hidden.shape[0] != visual.shape[0]:
            raise ValueError(f"lang hidden must be [{visual.shape[0]}, L, {self.lang_dim}], "
                             f"got {tuple(lang_hidden.shape)}")
        if lang_mask is not None and (lang_mask.shape != lang_hidden.shape[:2] or lang_mask.dtype != torch.bool):
            raise ValueError(f"lang mask must be bool {list(lang_hidden.shape[:2])}, "
                             f"got {lang_mask.dtype} {list(lang_mask.shape)}")
        return self.b_attn(visual, lang_hidden, lang_mask, with_language)
