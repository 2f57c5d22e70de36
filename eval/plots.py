"""PNG plots of detection results: AP per category (horizontal bars) and a precision-recall curve.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_BARS = 40  # beyond this, the lowest and highest MAX_BARS // 2 categories are shown


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120)
    return path


def save_per_category_ap(per_category: dict[str, float], path: str | Path, title: str) -> Path:
    """Bar chart of ``per_category`` (name -> AP in [0, 1]) sorted by AP, lowest at the top, with the mean over
    every category as a line; with more than :data:`MAX_BARS` categories only the lowest and highest
    ``MAX_BARS // 2`` are drawn and the title says so. Returns ``path``."""
    if not per_category:
        raise ValueError("no per-category AP to plot")
    ranked = sorted(per_category.items(), key=lambda item: (item[1], item[0]))
    shown = ranked if len(ranked) <= MAX_BARS else ranked[:MAX_BARS // 2] + ranked[-(MAX_BARS // 2):]
    mean = sum(per_category.values()) / len(per_category)
    suffix = "" if len(shown) == len(ranked) else f", the {MAX_BARS // 2} lowest and {MAX_BARS // 2} highest shown"
    figure = Figure(figsize=(7.5, 1.2 + 0.24 * len(shown)))
    axes = figure.subplots()
    positions = range(len(shown))[::-1]  # the lowest AP at the top
    axes.barh(list(positions), [ap for _, ap in shown], color="tab:blue")
    axes.set_yticks(list(positions), [name for name, _ in shown], fontsize=8)
    axes.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3f}")
    if len(shown) < len(ranked):
        axes.axhline(MAX_BARS // 2 - 0.5, color="gray", linestyle=":",
                     label=f"{len(ranked) - len(shown)} categories in between not shown")
    axes.set_xlim(0, 1)
    axes.set_xlabel("AP (IoU 0.50:0.95)")
    axes.set_title(f"{title}: AP per category ({len(ranked)} categories{suffix})", fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def save_pr_curve(recall: list[float], precision: list[float], path: str | Path, title: str) -> Path:
    """Precision against recall (equal-length lists, values in [0, 1]); the legend gives their mean precision,
    which is the AP of the curve when recall is the 101 COCO points. Returns ``path``."""
    if len(recall) != len(precision) or not recall:
        raise ValueError(f"recall and precision must be non-empty and of equal length, got {len(recall)} "
                         f"and {len(precision)}")
    mean = math.fsum(precision) / len(precision)
    figure = Figure(figsize=(5, 4.5))
    axes = figure.subplots()
    axes.plot(recall, precision, color="tab:blue", label=f"mean precision {mean:.3f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.grid(alpha=0.3)
    axes.set_title(f"{title}: precision-recall", fontsize=10)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)
