"""GIoU: hand-computed values, pairwise vs element-wise, degenerate boxes stay finite."""
from __future__ import annotations

import math

import pytest
import torch

from glee_core import processing
from train.glee import box_ops
from train.glee.box_ops import box_cxcywh_to_xyxy, elementwise_generalized_box_iou, generalized_box_iou


def test_reuses_core_conversion():
    assert box_ops.box_cxcywh_to_xyxy is processing.box_cxcywh_to_xyxy
    assert box_cxcywh_to_xyxy(torch.tensor([0.5, 0.5, 0.2, 0.4])).tolist() == pytest.approx([0.4, 0.3, 0.6, 0.7])


def test_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
    giou = generalized_box_iou(a, b)
    assert giou.shape == (2, 3)
    expected = [
        [1.0, 1 / 7 - 2 / 9, 0 - (6 - 5) / 6],       # identical, overlapping, touching at x = 2
        [1 / 4, 0 - (9 - 5) / 9, 0 - (3 - 2) / 3],   # contained, disjoint (corner), disjoint (gap of 1)
    ]
    assert giou.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    assert giou[1, 1] < 0 and giou[1, 2] < 0


def test_pairwise_matches_elementwise():
    gen = torch.Generator().manual_seed(0)
    a = box_cxcywh_to_xyxy(torch.rand(5, 4, generator=gen))
    b = box_cxcywh_to_xyxy(torch.rand(3, 4, generator=gen))
    pairwise = generalized_box_iou(a, b)
    assert torch.allclose(pairwise[2], elementwise_generalized_box_iou(a[2].expand(3, 4), b))
    assert ((pairwise >= -1) & (pairwise <= 1)).all()


def test_degenerate_boxes_are_finite_with_finite_gradients():
    a = torch.tensor([[0.2, 0.2, 0.2, 0.6],    # zero width
                      [0.5, 0.5, 0.5, 0.5],    # a point
                      [0.1, 0.1, 0.4, 0.4]], requires_grad=True)
    b = torch.tensor([[0.2, 0.2, 0.2, 0.6], [0.5, 0.5, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3]])
    giou = generalized_box_iou(a, b)
    assert torch.isfinite(giou).all()
    # identical zero-area boxes: no overlap area and an empty hull excess -> 0
    assert giou[0, 0].item() == 0.0 and giou[1, 1].item() == 0.0
    # a line against a point: iou 0, hull 0.3 x 0.4 with union 0 -> -1
    assert giou[0, 1].item() == pytest.approx(-1.0)
    giou.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_half_precision_inputs_computed_in_float32():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.bfloat16)
    assert generalized_box_iou(a, a).dtype == torch.float32
    assert generalized_box_iou(a, a).item() == 1.0


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        generalized_box_iou(torch.zeros(4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="end in 4"):
        elementwise_generalized_box_iou(torch.zeros(2, 3), torch.zeros(2, 3))
    assert math.isclose(generalized_box_iou(torch.zeros(0, 4), torch.zeros(2, 4)).numel(), 0)
