"""Wrap a model with a peft adapter (LoRA, prompt tuning, ...), refusing targets that would do nothing."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from adapters.optional import import_optional

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel


def apply_adapter(model: nn.Module, config: PeftConfig) -> PeftModel:
    """``peft.get_peft_model(model, config)``: the model's own weights frozen, the adapter's trainable.

    A model in eval mode stays in eval mode (peft builds the wrapper and the LoRA dropouts in train mode).

    Raises ValueError, before touching ``model``, when ``config.target_modules`` matches no module, or
    matches the ``out_proj`` of an ``nn.MultiheadAttention``: that module's forward reads
    ``out_proj.weight`` directly, so an adapter there would get no gradient yet change the merged model.
    """
    peft = import_optional("peft", "mllm")
    targets = getattr(config, "target_modules", None)
    if targets is not None and targets != "all-linear":  # peft expands "all-linear" itself
        check_targets(model, config)
    peft_model = peft.get_peft_model(model, config)
    if not model.training:
        peft_model.eval()
    return peft_model


def check_targets(model: nn.Module, config: PeftConfig) -> None:
    from peft.tuners.tuners_utils import check_target_module_exists

    pattern = config.target_modules
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) and check_target_module_exists(config, f"{name}.out_proj"):
            raise ValueError(
                f"target pattern {_show(pattern)} matches {name}.out_proj inside nn.MultiheadAttention, whose forward "
                "bypasses that submodule (the adapter would be ignored in training); narrow the pattern")
    if not any(check_target_module_exists(config, name) for name, _ in model.named_modules()):
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        raise ValueError(
            f"target pattern {_show(pattern)} matches no module of {type(model).__name__}; a str pattern must match a "
            f"whole module name, e.g. one of {linears[:3]} ({len(linears)} nn.Linear modules in all)")


def _show(pattern: str | set[str]) -> str:
    """A regex as written (no repr escaping), a name list sorted."""
    return pattern if isinstance(pattern, str) else str(sorted(pattern))
