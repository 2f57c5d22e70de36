"""Reasoning / referring segmentation metrics as LISA computes them (``../shared/reference/LISA.md`` §14).

Per query: I and U of the foreground; IoU = I / (U + 1e-5), and 1 when U = 0 (empty ground truth and empty
prediction). gIoU = mean of the per-query IoUs; cIoU = ΣI / ΣU over the split. Ground-truth pixels of
value 255 ("ignore") leave both I and U.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE = 255


def intersection_union(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """(I, U) of a bool prediction [H, W] and a target [H, W] (bool, or uint8 0/1/255 with 255 ignored)."""
    prediction = np.asarray(prediction, bool)
    target = np.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    valid = target != IGNORE if target.dtype != bool else np.ones_like(prediction)
    positive = (target == 1) & valid if target.dtype != bool else target
    prediction = prediction & valid
    return int((prediction & positive).sum()), int((prediction | positive).sum())


@dataclass
class SegmentationScores:
    """Running gIoU / cIoU over queries."""

    ious: list[float] = field(default_factory=list)
    intersection: int = 0
    union: int = 0

    def add(self, prediction: np.ndarray, target: np.ndarray) -> float:
        """Add one query; returns its IoU."""
        return self.add_counts(*intersection_union(prediction, target))

    def add_counts(self, i: int, u: int) -> float:
        """Add one query from its intersection and union (pixels); returns its IoU."""
        iou = 1.0 if u == 0 else i / (u + 1e-5)
        self.ious.append(iou)
        self.intersection += i
        self.union += u
        return iou

    @property
    def giou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else float("nan")

    @property
    def ciou(self) -> float:
        return self.intersection / self.union if self.union else float("nan")

    def precision_at(self, threshold: float) -> float:
        """Share of queries whose IoU is >= ``threshold`` (the referring papers' Prec@X)."""
        return float(np.mean(np.asarray(self.ious) >= threshold)) if self.ious else float("nan")

    def __len__(self) -> int:
        return len(self.ious)
