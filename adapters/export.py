"""Merge LoRA into the weights and save a folder that loads without peft."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedModel

from adapters.lora import merge_lora
from adapters.optional import import_optional
from glee_core.modeling.glee import GleeModel

if TYPE_CHECKING:
    from peft import PeftModel


def export_merged(peft_model: PeftModel, out_dir: str | Path, *, tokenizer: Any = None, processor: Any = None) -> Path:
    """Merge ``peft_model``'s LoRA (consuming it, see :func:`merge_lora`) and save the plain model to ``out_dir``.

    A Hugging Face model is written with ``save_pretrained`` (config.json + model.safetensors, plus the
    ``tokenizer`` / ``processor`` when given) and reloads with its class's ``from_pretrained``; a
    :class:`GleeModel` with its own ``save_pretrained`` (reload with ``GleeModel.from_pretrained``).
    Returns the folder.
    """
    peft = import_optional("peft", "mllm")
    if not isinstance(peft_model, peft.PeftModel):
        raise ValueError(f"export_merged needs a peft.PeftModel (from apply_lora), got {type(peft_model).__name__}")
    base = peft_model.get_base_model()
    if not isinstance(base, (PreTrainedModel, GleeModel)):
        raise ValueError(f"cannot export a {type(base).__name__}: only Hugging Face PreTrainedModels and GleeModel "
                         "know how to save themselves")
    if isinstance(base, GleeModel) and (tokenizer is not None or processor is not None):
        raise ValueError("a GleeModel folder has no tokenizer or processor (GLEE tokenizes internally); drop them")
    out_dir = Path(out_dir)
    model = merge_lora(peft_model)
    model.save_pretrained(out_dir)
    for extra in (tokenizer, processor):
        if extra is not None:
            extra.save_pretrained(out_dir)
    return out_dir
