"""Loss curves as PNG: the training history people would rather see than read."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def smooth(values: list[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0 or window <= 1:
        return x
    cumsum = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def save_loss_curve(path: str | Path, train: list[tuple[int, float]], val: list[tuple[int, float]] | None = None,
                    title: str = "training loss") -> Path:
    """Plot (step, loss) pairs: raw and smoothed training loss, validation loss as markers; log-scale y."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="train")
        ax.plot(steps, smooth(list(losses), max(1, len(losses) // 20)), color="#08519c", linewidth=1.8,
                label="train (smoothed)")
    if val:
        steps, losses = zip(*val)
        ax.plot(steps, losses, "o-", color="#e6550d", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if train and min(l for _, l in train) > 0:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
