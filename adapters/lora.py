"""LoRA for the two halves of a gleekit system: the VLM's language model and GLEE's object decoder.

Target patterns are peft ``target_modules`` regexes, matched with ``re.fullmatch`` against module names
(``model.named_modules()``). To adapt both halves with one adapter, join them:
``f"{LLM_LORA_TARGETS}|{GLEE_LORA_TARGETS}"``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from adapters.apply import check_targets, apply_adapter
from adapters.optional import import_optional

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

LLM_LORA_TARGETS = r"(?:.*\.)?language_model\.(?:.*\.)?(?:q_proj|v_proj)"
"""q_proj and v_proj of every attention layer under a ``language_model`` module, as LISA does (its §8).

Matches Hugging Face VLMs (LLaVA ``model.language_model.layers.N.self_attn.q_proj``, Qwen2-VL, the older
``language_model.model.layers...``) and never their vision tower, multimodal projector, or GLEE modules."""

GLEE_LORA_TARGETS = (
    r"(?:.*\.)?predictor\.(?:"
    r"decoder\.layers\.\d+\.(?:cross_attn\.(?:value_proj|output_proj)|linear1|linear2)"
    r"|(?:mask_embed|confidence_score)\.layers\.\d+"
    r"|(?:decoder\.)?_?bbox_embed(?:\.\d+)?\.layers\.\d+"
    r")"
)
"""The nn.Linear layers of GLEE's object decoder (``GleeModel.predictor``) that carry content:

- each decoder layer's deformable cross-attention ``value_proj`` / ``output_proj`` and FFN ``linear1`` / ``linear2``;
- the heads: ``mask_embed`` (mask), ``confidence_score`` (objectness) and the box MLP (one module shared by
  ``_bbox_embed``, ``bbox_embed.N`` and ``decoder.bbox_embed.N``; wrapped once, seen by every alias).

Left out: ``cross_attn.sampling_offsets`` / ``attention_weights`` (where and how much to sample, not what;
Deformable DETR already trains sampling_offsets at 0.1x the learning rate), ``ref_point_head`` (positional),
``enc_output`` (two-stage proposal selection), and ``self_attn``: an ``nn.MultiheadAttention``, which ignores
LoRA on its ``out_proj`` (refused by :func:`apply_lora`); peft's experimental LoRA for the whole module is
opt-in with :data:`GLEE_SELF_ATTN_TARGETS`. The class head is the matrix ``predictor.category_embed``, not an
nn.Linear: unfreeze it to train it. Backbone, pixel decoder and text encoder are never matched."""

GLEE_SELF_ATTN_TARGETS = r"(?:.*\.)?predictor\.decoder\.layers\.\d+\.self_attn"
"""The decoder layers' query self-attention (``nn.MultiheadAttention``) as whole modules, for peft's experimental
MultiheadAttention LoRA (in_proj and out_proj); add it with ``f"{GLEE_LORA_TARGETS}|{GLEE_SELF_ATTN_TARGETS}"``."""


def llm_lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.05,
                    target_modules: str | Sequence[str] | None = None,
                    modules_to_save: Sequence[str] | None = None,
                    trainable_token_indices: dict[str, list[int]] | None = None) -> LoraConfig:
    """LoRA of rank ``r`` (scale ``alpha / r``) on the language model; default targets :data:`LLM_LORA_TARGETS`.

    ``modules_to_save`` (e.g. ``["lm_head", "embed_tokens"]`` after adding ``[SEG]``, as LISA does) are trained in
    full; ``trainable_token_indices`` (from :func:`token_rows`) trains only those rows, through peft's trainable
    tokens: for a 7B LLaMA, the 2 x 32k rows of 4096 become the few new ones.
    """
    return _lora_config(r, alpha, dropout, LLM_LORA_TARGETS if target_modules is None else target_modules,
                        modules_to_save, task_type="CAUSAL_LM", trainable_token_indices=trainable_token_indices)


def token_rows(model: nn.Module, token_ids: Sequence[int]) -> dict[str, list[int]]:
    """peft ``trainable_token_indices`` training the rows of ``token_ids`` in ``model``'s input embeddings and,
    when not tied to them, its output embeddings (``lm_head``): ``{module name: sorted ids}``.

    Raises ValueError for an empty list or an id outside the vocabulary (resize the embeddings first).
    """
    ids = sorted(set(int(i) for i in token_ids))
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if not ids:
        raise ValueError("token_rows needs at least one token id")
    if ids[0] < 0 or ids[-1] >= inputs.num_embeddings:
        raise ValueError(f"token ids {ids[0]}..{ids[-1]} fall outside the {inputs.num_embeddings} input embeddings; "
                         "add the tokens and resize the model's embeddings first")
    names = {id(module): name for name, module in model.named_modules()}
    rows = {names[id(inputs)]: ids}
    if outputs is not None and outputs.weight is not inputs.weight:  # tied heads follow their embedding in peft
        rows[names[id(outputs)]] = ids
    return rows


def glee_lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.05,
                     target_modules: str | Sequence[str] | None = None,
                     modules_to_save: Sequence[str] | None = None) -> LoraConfig:
    """LoRA of rank ``r`` (scale ``alpha / r``) on GLEE's object decoder; default targets :data:`GLEE_LORA_TARGETS`."""
    return _lora_config(r, alpha, dropout, GLEE_LORA_TARGETS if target_modules is None else target_modules,
                        modules_to_save, task_type=None)


def _lora_config(r: int, alpha: int, dropout: float, target_modules: str | Sequence[str],
                 modules_to_save: Sequence[str] | None, task_type: str | None,
                 trainable_token_indices: dict[str, list[int]] | None = None) -> LoraConfig:
    peft = import_optional("peft", "mllm")
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    both = {name.rsplit(".", 1)[-1] for name in trainable_token_indices or {}} & set(modules_to_save or ())
    if both:
        raise ValueError(f"{sorted(both)} would train both in full (modules_to_save) and by rows "
                         "(trainable_token_indices): keep one")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    return peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules=targets,
                           modules_to_save=None if modules_to_save is None else list(modules_to_save),
                           trainable_token_indices=trainable_token_indices, task_type=task_type)


def apply_lora(model: nn.Module, config: LoraConfig) -> PeftModel:
    """``model`` wrapped with LoRA (see :func:`adapters.apply.apply_adapter`); only LoRA, ``modules_to_save`` and
    trainable token rows train.

    Raises ValueError naming the pattern when ``config.target_modules`` matches no module.
    """
    peft = import_optional("peft", "mllm")
    if not isinstance(config, peft.LoraConfig):
        raise ValueError(f"apply_lora needs a peft.LoraConfig (see llm_lora_config / glee_lora_config), "
                         f"got {type(config).__name__}; use apply_adapter for other adapters")
    return apply_adapter(model, config)


def merge_lora(peft_model: PeftModel) -> nn.Module:
    """The base model with ``W + (alpha / r) * B @ A`` folded into each wrapped layer; no peft modules remain.

    Works in place: ``peft_model`` is consumed (its base model is the returned object).
    """
    peft = import_optional("peft", "mllm")
    if not isinstance(peft_model, peft.PeftModel):
        raise ValueError(f"merge_lora needs a peft.PeftModel (from apply_lora), got {type(peft_model).__name__}")
    if peft_model.active_peft_config.is_prompt_learning:
        raise ValueError("prompt tuning adds virtual tokens, not weights: there is nothing to merge; "
                         "keep the PeftModel or save the adapter with its save_pretrained")
    return peft_model.merge_and_unload()


def inject_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """LoRA layers put into ``model`` in place (no PeftModel wrapper, so the model keeps its own methods and
    attributes; GleeLLM does this for ``glee_policy="lora"``). The new LoRA weights train; nothing else changes."""
    peft = import_optional("peft", "mllm")
    check_targets(model, config)
    return peft.inject_adapter_in_model(config, model)


def has_lora(model: nn.Module) -> bool:
    return any(".lora_" in name for name, _ in model.named_parameters())


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a model with injected LoRA layers as if merged: each wrapped weight becomes
    ``W + (alpha / r) B A`` under its original name; LoRA tensors are dropped. ``model`` is not changed."""
    from peft.tuners.lora import LoraLayer

    state = {}
    for name, value in model.state_dict().items():
        if ".lora_" not in name:
            state[name.replace(".base_layer.", ".")] = value
    for name, module in model.named_modules(remove_duplicate=False):  # shared modules: every alias
        if isinstance(module, LoraLayer):
            weight = f"{name}.weight"
            for adapter in module.active_adapters:
                state[weight] = state[weight] + module.get_delta_weight(adapter).to(state[weight].dtype)
    return state
