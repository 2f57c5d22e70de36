"""Learning-rate schedules of the trainers, as ``LambdaLR`` multipliers of the base rate."""
from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("warmup_decay", "cosine", "constant")


def lr_multiplier(schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """The multiplier after ``step`` optimizer steps: linear warm-up over ``warmup_steps``, then ``constant`` (1),
    ``cosine`` (down to ``min_lr_ratio`` at ``total_steps``) or ``warmup_decay`` (linear to 0, DeepSpeed's
    WarmupDecayLR)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {list(SCHEDULES)}, got {schedule!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "cosine":
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1 - progress)

    return factor
