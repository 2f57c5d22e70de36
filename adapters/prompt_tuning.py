"""Prompt tuning of the language model: ``num_virtual_tokens`` trainable embeddings prepended to every input.

Wrap with :func:`adapters.apply.apply_adapter`; only the [num_virtual_tokens, hidden] prompt table trains.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from adapters.optional import import_optional

if TYPE_CHECKING:
    from peft import PromptTuningConfig


def prompt_tuning_config(num_virtual_tokens: int = 16, *, init_text: str | None = None,
                         tokenizer_path: str | Path | None = None) -> PromptTuningConfig:
    """Prompt tuning for a causal LM: random virtual tokens, or the embeddings of ``init_text``'s tokens
    (repeated or cut to ``num_virtual_tokens``), tokenized with the tokenizer saved at ``tokenizer_path``."""
    peft = import_optional("peft", "mllm")
    if num_virtual_tokens < 1:
        raise ValueError(f"num_virtual_tokens must be >= 1, got {num_virtual_tokens}")
    if init_text is None:
        return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    if tokenizer_path is None:
        raise ValueError("init_text needs tokenizer_path: the folder (or hub name) of the model's tokenizer")
    return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens,
                                   prompt_tuning_init=peft.PromptTuningInit.TEXT, prompt_tuning_init_text=init_text,
                                   tokenizer_name_or_path=str(tokenizer_path))
