"""bitsandbytes 4-bit (NF4, QLoRA) and 8-bit (LLM.int8) loading of Hugging Face language models.

bitsandbytes is the optional ``quant`` extra; it is imported only when a quantized config is built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import BitsAndBytesConfig, PreTrainedModel

from adapters.optional import import_optional

DEFAULT_SKIP_MODULES: tuple[str, ...] = (
    "lm_head",
    r".*vision_tower", r".*visual", r".*multi_modal_projector", r".*mm_projector",
    r".*glee", r".*seg_projector", r".*object_projector",
)
"""Modules kept in full precision: the output head, the vision tower (LLaVA ``vision_tower``, Qwen2-VL
``visual``; LISA skips its vision model too), the multimodal projector, and gleekit's GLEE model and
projectors. transformers skips a module when an entry matches its name as a regex anchored at the start and
ending at a name boundary (``.*glee`` skips ``model.glee.predictor.x``), or as a suffix (``lm_head``).
Giving any skip list replaces transformers' own default (which keeps ``lm_head``), hence ``lm_head`` here."""

CPU_PACKING_BLOCK_N = 32
"""Output rows per block of bitsandbytes' packed AVX512-BF16 CPU layout (its ``block_n``)."""


def quantization_config(bits: int | None, compute_dtype: torch.dtype = torch.float32, *,
                        skip_modules: Sequence[str] = ()) -> BitsAndBytesConfig | None:
    """4 -> NF4 with double quantization, matmuls in ``compute_dtype``; 8 -> LLM.int8; None -> None (no quantization).

    ``skip_modules`` become ``llm_int8_skip_modules`` (used by both 4- and 8-bit loading).
    """
    if bits is None:
        return None
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4, 8 or None (no quantization), got {bits!r}")
    import_optional("bitsandbytes", "quant")
    skip = list(skip_modules) or None
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_quantized(model_class: type[PreTrainedModel], path: str | Path, bits: int | None, *,
                   skip_modules: Sequence[str] = DEFAULT_SKIP_MODULES, compute_dtype: torch.dtype = torch.float32,
                   **kwargs: Any) -> PreTrainedModel:
    """``model_class.from_pretrained(path)``, its nn.Linear layers but ``skip_modules`` quantized to ``bits`` (4, 8;
    None: loaded as saved); other ``kwargs`` go to :func:`from_pretrained_quantized`."""
    config = quantization_config(bits, compute_dtype, skip_modules=skip_modules)
    return from_pretrained_quantized(model_class, path, config, **kwargs)


def from_pretrained_quantized(model_class: type[PreTrainedModel], path: str | Path,
                              config: BitsAndBytesConfig | None, **kwargs: Any) -> Any:
    """``model_class.from_pretrained(path, quantization_config=config, **kwargs)``, the one place gleekit loads a
    quantized model: with a config, ``device_map`` defaults to ``"auto"`` with CUDA and ``"cpu"`` without, and a
    4-bit model goes through :func:`unpack_narrow_4bit_layers`. Returns what from_pretrained returns (a
    ``(model, loading_info)`` pair with ``output_loading_info=True``)."""
    if config is not None:
        kwargs.setdefault("device_map", "auto" if torch.cuda.is_available() else "cpu")
    loaded = model_class.from_pretrained(path, quantization_config=config, **kwargs)
    if getattr(config, "load_in_4bit", False):
        unpack_narrow_4bit_layers(loaded[0] if isinstance(loaded, tuple) else loaded)
    return loaded


def unpack_narrow_4bit_layers(model: torch.nn.Module) -> torch.nn.Module:
    """Keep bitsandbytes' generic CPU path for 4-bit layers too small for its packed CPU kernel; returns ``model``.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit weight for its fast kernel at the first
    inference forward, which fails unless the input width is a multiple of the quantization block (64) and the
    output width a multiple of 32 ("shape '[32, 0]' is invalid", "N must be divisible by block_n"). Real LLMs
    have no such layers; tiny test models do. :func:`from_pretrained_quantized` calls it.
    """
    bnb = import_optional("bitsandbytes", "quant")
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if isinstance(module, bnb.nn.Linear4bit) and state is not None and (
                module.in_features % state.blocksize or module.out_features % CPU_PACKING_BLOCK_N):
            module.support_avx512bf16_for_cpu = False
    return model


def prepare_for_kbit_lora(model: PreTrainedModel) -> PreTrainedModel:
    """peft's ``prepare_model_for_kbit_training`` without gradient checkpointing: every base weight frozen and the
    non-quantized fp16/bf16 ones cast to fp32 (stable LoRA training). Call on a quantized model, then LoRA."""
    peft = import_optional("peft", "mllm")
    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
