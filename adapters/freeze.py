"""Freeze policies: which parameters of a model train.

``GleePolicy`` names the three ways GLEE joins an mLLM: ``frozen`` (LISA keeps its SAM encoder frozen),
``lora`` (LoRA adapters on the object decoder; see :mod:`adapters.lora`), ``full``.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from torch import nn


class GleePolicy(str, enum.Enum):
    FROZEN = "frozen"
    LORA = "lora"
    FULL = "full"


@dataclass(frozen=True)
class TrainableSummary:
    """Parameter counts of a model (elements, not tensors)."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"{self.trainable:,} of {self.total:,} parameters train ({100 * self.fraction:.2f} %)"


def freeze(module: nn.Module) -> nn.Module:
    """No parameter of ``module`` trains; returns it."""
    module.requires_grad_(False)
    return module


def unfreeze_matching(module: nn.Module, patterns: list[str]) -> list[str]:
    """Make every parameter whose name matches one of the regexes ``patterns`` (``re.search``) trainable.

    Returns the names it set; a pattern matching nothing raises, since a silently frozen module is the
    typical cause of a model that never learns.
    """
    compiled = [re.compile(p) for p in patterns]
    hits: dict[str, list[str]] = {p.pattern: [] for p in compiled}
    for name, parameter in module.named_parameters():
        for pattern in compiled:
            if pattern.search(name):
                parameter.requires_grad_(True)
                hits[pattern.pattern].append(name)
    unmatched = [p for p, names in hits.items() if not names]
    if unmatched:
        raise ValueError(f"no parameter name matches {unmatched}; names look like "
                         f"{[n for n, _ in list(module.named_parameters())[:3]]}")
    return sorted({n for names in hits.values() for n in names})


def trainable_summary(module: nn.Module) -> TrainableSummary:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return TrainableSummary(trainable, total)
