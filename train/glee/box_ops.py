"""Generalized IoU for training losses and matching (boxes in xyxy, any units).

Unlike the official ``box_ops.generalized_box_iou`` there is no assertion on degenerate boxes: areas and the
union / enclosing area are clamped, so zero-width or zero-height boxes (and inverted ones, treated as empty)
give finite values and finite gradients.
"""
from __future__ import annotations

import torch

from glee_core.processing import box_cxcywh_to_xyxy

__all__ = ["box_cxcywh_to_xyxy", "elementwise_generalized_box_iou", "generalized_box_iou"]

# Smallest union / enclosing area divided by; far below any real normalised box area (1 px of 4096^2 ~ 6e-8).
_AREA_EPS = 1e-9


def _area(boxes: torch.Tensor) -> torch.Tensor:
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def elementwise_generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """GIoU of broadcast pairs: boxes1 [..., 4], boxes2 [..., 4] (xyxy) -> [...] in [-1, 1].

    Computed in float32 (or float64 if given); differentiable.
    """
    if boxes1.shape[-1] != 4 or boxes2.shape[-1] != 4:
        raise ValueError(f"boxes must end in 4 (xyxy); got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    dtype = torch.promote_types(torch.promote_types(boxes1.dtype, boxes2.dtype), torch.float32)
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    area1, area2 = _area(boxes1), _area(boxes2)
    inter_wh = (torch.minimum(boxes1[..., 2:], boxes2[..., 2:]) - torch.maximum(boxes1[..., :2], boxes2[..., :2]))
    inter_wh = inter_wh.clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area1 + area2 - inter
    iou = inter / union.clamp(min=_AREA_EPS)
    hull_wh = (torch.maximum(boxes1[..., 2:], boxes2[..., 2:]) - torch.minimum(boxes1[..., :2], boxes2[..., :2]))
    hull_wh = hull_wh.clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou - (hull - union) / hull.clamp(min=_AREA_EPS)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU: boxes1 [N, 4], boxes2 [M, 4] (xyxy) -> [N, M]."""
    if boxes1.dim() != 2 or boxes2.dim() != 2:
        raise ValueError(f"generalized_box_iou expects [N, 4] and [M, 4]; got {tuple(boxes1.shape)} and "
                         f"{tuple(boxes2.shape)}")
    return elementwise_generalized_box_iou(boxes1[:, None, :], boxes2[None, :, :])
