"""CLIP text tower of GLEE and the two ways the model turns its tokens into prompts.

GleeModel owns ``text_encoder`` (and the frozen distillation copy ``text_encoder_teacher``), each a
transformers ``CLIPTextModel(clip_text_config(...))`` whose state-dict names (``embeddings.*``,
``encoder.layers.*``, ``final_layer_norm.*``) are the official ones, plus ``lang_projection``, a bare
[LANG_DIM, 256] matrix. The functions here are pure: they take those modules and tokenized text.

* Categories: each name is one sequence; its class embedding is the mean over BOS..EOS of the
  projected tokens (project, then pool); the early-fusion input is every valid projected token of
  every name, concatenated in order.
* Expressions (referring): one sequence per image; the decoder gets all 77 projected tokens
  (sequence first) with a PAD mask, and the class embedding is pooled the same way.

The text model runs with the attention mask; its causal mask already keeps the BOS..EOS outputs
independent of the padding, the mask only changes the PAD positions' outputs. Category names therefore
run cut after their last valid token; expressions run on all 77 positions, since the referring path
feeds the PAD positions' outputs to early fusion and the decoder.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import CONTEXT_LENGTH, VOCAB_SIZE


def clip_text_config(
    hidden_size: int = 512, intermediate_size: int = 2048, num_layers: int = 12, num_heads: int = 8
) -> CLIPTextConfig:
    """CLIP ViT-B/32 text-tower config (real: 512/2048/12/8; tiny fixtures: 32/128/2/4).

    Vocabulary 49408, 77 positions, quick_gelu, LayerNorm eps 1e-5, and the special-token ids of the
    repo's ``clip_vit_base_patch32/config.json`` (they only affect the unused pooled output).
    """
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=CONTEXT_LENGTH,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        projection_dim=512,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


class CategoryEncoding(NamedTuple):
    class_embeddings: torch.Tensor  # [K, 256]
    fusion_tokens: torch.Tensor  # [1, sum_k L_k, 256]


class ExpressionEncoding(NamedTuple):
    grounding_tokens: torch.Tensor  # [77, B, 256], sequence first
    grounding_pad_mask: torch.Tensor  # [B, 77] bool, True = PAD
    grounding_class: torch.Tensor  # [B, 256]
    fusion_tokens: torch.Tensor  # [B, 77, 256]
    fusion_mask: torch.Tensor  # [B, 77] bool, True = valid


def text_hidden_states(text_model: CLIPTextModel, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
    """CLIP last hidden state [N, L, D] of ``input_ids``/``attention_mask`` [N, L] (L <= 77)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [N, L], got shape {tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    positions = text_model.config.max_position_embeddings
    if input_ids.shape[1] > positions:
        raise ValueError(f"sequences of {input_ids.shape[1]} tokens exceed the {positions} positions")
    if bool((attention_mask.sum(-1) == 0).any()):
        raise ValueError("a sequence has an all-zero attention mask (no BOS/EOS)")
    return text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _project(text_model: CLIPTextModel, lang_projection: torch.Tensor, input_ids: torch.Tensor,
             attention_mask: torch.Tensor) -> torch.Tensor:
    """Projected tokens ``last_hidden_state @ lang_projection`` [N, L, 256]."""
    if lang_projection.dim() != 2 or lang_projection.shape[0] != text_model.config.hidden_size:
        raise ValueError(
            f"lang_projection must be [{text_model.config.hidden_size}, C], got shape {tuple(lang_projection.shape)}")
    return text_hidden_states(text_model, input_ids, attention_mask) @ lang_projection


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of ``tokens`` [N, L, C] over positions where ``mask`` [N, L] is nonzero -> [N, C]."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1)


def encode_categories(text_model: CLIPTextModel, lang_projection: torch.Tensor, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor, chunk_size: int = 256) -> CategoryEncoding:
    """K category names (tokenized, [K, 77]) -> class embeddings [K, 256] and fusion tokens [1, ΣL_k, 256].

    Names run through the text model in chunks of ``chunk_size`` names of similar length, each chunk cut
    after its last valid token: the causal mask makes valid-token outputs independent of trailing padding,
    so this equals encoding all 77 positions (an LVIS name has ~4 valid tokens) with bounded memory.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"input_ids and attention_mask must both be [K, L], got {tuple(input_ids.shape)} "
                         f"and {tuple(attention_mask.shape)}")
    valid = attention_mask > 0
    positions = torch.arange(1, valid.shape[1] + 1, device=valid.device)
    widths = (valid * positions).amax(1)  # last valid position + 1 per name
    order = torch.argsort(widths, stable=True)
    pooled, per_name = [], [None] * len(order)
    for chunk in order.split(chunk_size):
        width = max(int(widths[chunk].max()), 1)
        tokens = _project(text_model, lang_projection, input_ids[chunk, :width], attention_mask[chunk, :width])
        pooled.append(mean_pool(tokens, attention_mask[chunk, :width]))
        for row, name in enumerate(chunk.tolist()):
            per_name[name] = tokens[row][valid[name, :width]]
    class_embeddings = torch.cat(pooled)[torch.argsort(order)]
    return CategoryEncoding(class_embeddings, torch.cat(per_name).unsqueeze(0))


def encode_caption(text_model: CLIPTextModel, lang_projection: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, token_spans: list[tuple[int, int]]) -> CategoryEncoding:
    """One caption (tokenized, [1, 77]) and P phrase token ranges ``[a, b)`` -> class embeddings [P, 256] (the
    mean of each phrase's projected tokens, in context) and fusion tokens [1, L, 256] (the caption's valid tokens)."""
    if input_ids.shape[0] != 1:
        raise ValueError(f"encode one caption at a time, got {input_ids.shape[0]}")
    tokens = _project(text_model, lang_projection, input_ids, attention_mask)[0]
    valid = int(attention_mask[0].sum())
    for first, last in token_spans:
        if not 1 <= first < last <= valid - 1:
            raise ValueError(f"token span [{first}, {last}) is outside the caption's words [1, {valid - 1})")
    class_embeddings = torch.stack([tokens[first:last].mean(0) for first, last in token_spans])
    return CategoryEncoding(class_embeddings, tokens[attention_mask[0] > 0].unsqueeze(0))


def encode_expressions(text_model: CLIPTextModel, lang_projection: torch.Tensor,
                       input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ExpressionEncoding:
    """B referring expressions (tokenized, [B, 77], one per image) -> decoder prompt tokens and class embeddings."""
    tokens = _project(text_model, lang_projection, input_ids, attention_mask)
    return expression_encoding(tokens, attention_mask > 0)


def expression_encoding(tokens: torch.Tensor, valid: torch.Tensor) -> ExpressionEncoding:
    """Referring prompt from B sequences of prompt-space tokens [B, L, C] with ``valid`` [B, L] bool (True =
    a real token): the CLIP path's projected tokens, or embeddings from elsewhere (an LLM's ``[SEG]`` state
    through a projector)."""
    if tokens.dim() != 3 or valid.shape != tokens.shape[:2]:
        raise ValueError(f"prompt tokens must be [B, L, C] with a [B, L] mask, got {tuple(tokens.shape)} and "
                         f"{tuple(valid.shape)}")
    if not bool(valid.any(1).all()):
        raise ValueError("a prompt sequence has no valid token")
    return ExpressionEncoding(
        grounding_tokens=tokens.transpose(0, 1),
        grounding_pad_mask=~valid,
        grounding_class=mean_pool(tokens, valid),
        fusion_tokens=tokens,
        fusion_mask=valid,
    )
