"""Referring-video J&F, the DAVIS convention (DATA_FORMATS.md §10).

J (region similarity) of a frame is the IoU of the predicted and true masks, 1 when both are empty. F (contour
accuracy) is the F-measure of the two masks' boundary maps, a boundary pixel counting as matched when the other
boundary lies within ``ceil(0.008 × image diagonal)`` pixels (a disk); 1 when both masks are empty, 0 when only
one is. Per expression: J and F are means over its frames; the dataset J and F are means over expressions and
J&F = (J + F) / 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

BOUNDARY_TOLERANCE = 0.008  # fraction of the image diagonal


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be masks [H, W] of the same shape")
    return pred, gt


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: IoU of two bool masks [H, W]; 1 when both are empty."""
    pred, gt = _pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    return np.count_nonzero(pred & gt) / union if union else 1.0


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels whose east, south or south-east neighbour has the other value (DAVIS ``seg2bmap``).
    Pixels beyond the image take their neighbour's value, so the image border is no boundary (a mask covering
    the whole image has an empty boundary map, and counts as "empty" for F, as in DAVIS)."""
    mask = np.asarray(mask, bool)
    padded = np.pad(mask, ((0, 1), (0, 1)), mode="edge")
    east, south, south_east = padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]
    boundary = (mask ^ east) | (mask ^ south) | (mask ^ south_east)
    boundary[-1, -1] = False
    return boundary


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """F: 2PR / (P + R) of the boundary maps of two bool masks [H, W], matched within
    ``ceil(tolerance × diagonal)`` pixels; 1 when both boundary maps are empty (e.g. both masks empty), 0 when
    only one is."""
    pred, gt = _pair(pred, gt)
    pred_boundary, gt_boundary = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = np.count_nonzero(pred_boundary), np.count_nonzero(gt_boundary)
    if n_pred == 0 or n_gt == 0:
        return 1.0 if n_pred == n_gt else 0.0
    disk = _disk(math.ceil(tolerance * math.hypot(*pred.shape)))
    precision = np.count_nonzero(pred_boundary & ndimage.binary_dilation(gt_boundary, disk)) / n_pred
    recall = np.count_nonzero(gt_boundary & ndimage.binary_dilation(pred_boundary, disk)) / n_gt
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@dataclass
class JFScores:
    """Running J, F over expressions: each :meth:`add` is one expression's frames."""

    j: list[float] = field(default_factory=list)  # per expression: mean J over its frames
    f: list[float] = field(default_factory=list)  # per expression: mean F over its frames

    def add(self, preds: np.ndarray, gts: np.ndarray) -> tuple[float, float]:
        """Add one expression: bool masks [T, H, W] predicted and true (the union of the referred objects).
        Returns its (J, F)."""
        preds, gts = np.asarray(preds, bool), np.asarray(gts, bool)
        if preds.shape != gts.shape or preds.ndim != 3 or not len(preds):
            raise ValueError(f"preds {preds.shape} and gts {gts.shape} must be masks [T, H, W] (T >= 1) of one shape")
        self.j.append(float(np.mean([region_similarity(p, g) for p, g in zip(preds, gts)])))
        self.f.append(float(np.mean([boundary_f(p, g) for p, g in zip(preds, gts)])))
        return self.j[-1], self.f[-1]

    @property
    def J(self) -> float:  # noqa: N802 (the metric's name)
        return float(np.mean(self.j)) if self.j else float("nan")

    @property
    def F(self) -> float:  # noqa: N802
        return float(np.mean(self.f)) if self.f else float("nan")

    @property
    def JF(self) -> float:  # noqa: N802
        return (self.J + self.F) / 2

    def __len__(self) -> int:
        return len(self.j)
