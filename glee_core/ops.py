"""Greedy non-maximum suppression on numpy boxes (no torchvision)."""
from __future__ import annotations

import numpy as np

from glee_core.mask_ops import box_iou


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy NMS: keep the best box, drop the others whose IoU with it is ``> iou_threshold``, repeat.

    boxes ``[N, 4]`` xyxy, scores ``[N]``; with ``labels`` ``[N]`` only boxes of the same label
    suppress each other. Returns the kept indices (int64), highest score first; ties keep the
    lower index first.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4], got shape {tuple(boxes.shape)}")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"scores must be [N] with N={boxes.shape[0]}, got shape {tuple(scores.shape)}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (boxes.shape[0],):
            raise ValueError(f"labels must be [N] with N={boxes.shape[0]}, got shape {labels.shape}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = box_iou(boxes[best][None], boxes[rest])[0] > iou_threshold
        if labels is not None:
            overlap &= labels[rest] == labels[best]
        order = rest[~overlap]
    return np.asarray(keep, dtype=np.int64)
