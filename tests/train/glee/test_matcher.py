"""Hungarian matcher: known permutations recovered from boxes or masks, cost hand values, edge cases."""
from __future__ import annotations

import math

import pytest
import torch

from train.glee.matcher import (
    HungarianMatcher,
    Target,
    batch_dice_cost,
    batch_sigmoid_ce_cost,
    focal_class_cost,
)

GEN_SEED = 0


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(GEN_SEED)


def _square_masks(boxes: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Binary masks [n, size, size] filling the cxcywh boxes."""
    centre = (torch.arange(size) + 0.5) / size
    x0, y0 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x1, y1 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    inside_x = (centre >= x0[:, None]) & (centre <= x1[:, None])
    inside_y = (centre >= y0[:, None]) & (centre <= y1[:, None])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()


TARGET_BOXES = torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.7, 0.3, 0.3, 0.2], [0.4, 0.7, 0.2, 0.3], [0.8, 0.8, 0.1, 0.2]])
LABELS = torch.tensor([0, 2, 1, 2])
# query q predicts target QUERY_TO_TARGET[q]; queries 1 and 4 predict nothing
QUERY_TO_TARGET = {0: 2, 2: 0, 3: 3, 5: 1}


def _predictions(num_queries: int = 6, num_classes: int = 3, noise: float = 0.01):
    gen = _gen()
    logits = torch.full((1, num_queries, num_classes), -4.0)
    boxes = torch.rand(1, num_queries, 4, generator=gen) * 0.2 + 0.4
    for q, t in QUERY_TO_TARGET.items():
        logits[0, q, LABELS[t]] = 4.0
        boxes[0, q] = TARGET_BOXES[t] + noise * torch.randn(4, generator=gen)
    return logits, boxes


def _as_pairs(indices) -> dict[int, int]:
    rows, cols = indices
    return dict(zip(rows.tolist(), cols.tolist()))


def test_recovers_permutation_from_boxes():
    logits, boxes = _predictions()
    indices = HungarianMatcher(num_points=64)(logits, boxes, None, [Target(LABELS, TARGET_BOXES)])
    assert len(indices) == 1
    assert indices[0][0].dtype == torch.int64 and indices[0][1].dtype == torch.int64
    assert _as_pairs(indices[0]) == QUERY_TO_TARGET


def test_recovers_permutation_from_masks_alone():
    """All predicted boxes and logits are identical: only the masks can tell the queries apart."""
    masks = _square_masks(TARGET_BOXES)
    pred_masks = torch.full((1, 6, 32, 32), -8.0)
    for q, t in QUERY_TO_TARGET.items():
        pred_masks[0, q] = 16 * masks[t] - 8
    logits = torch.zeros(1, 6, 3)
    boxes = torch.full((1, 6, 4), 0.5)
    target = Target(LABELS, TARGET_BOXES, masks)
    indices = HungarianMatcher(num_points=256)(logits, boxes, pred_masks, [target], generator=_gen())
    assert _as_pairs(indices[0]) == QUERY_TO_TARGET


def test_match_on_selects_the_costs():
    """Boxes say permutation A, masks say permutation B; match_on decides which wins."""
    logits, boxes = _predictions(noise=0.0)
    masks = _square_masks(TARGET_BOXES)
    other = {0: 1, 2: 3, 3: 0, 5: 2}
    pred_masks = torch.full((1, 6, 32, 32), -8.0)
    for q, t in other.items():
        pred_masks[0, q] = 16 * masks[t] - 8
    logits = torch.zeros_like(logits)
    target = Target(LABELS, TARGET_BOXES, masks)
    by_box = HungarianMatcher(num_points=256, match_on=("box",))
    by_mask = HungarianMatcher(num_points=256, match_on=("mask",))
    assert _as_pairs(by_box(logits, boxes, pred_masks, [target], generator=_gen())[0]) == QUERY_TO_TARGET
    assert _as_pairs(by_mask(logits, boxes, pred_masks, [target], generator=_gen())[0]) == other
    # a target without masks: the default (box + mask) matcher uses class + box costs only
    no_masks = Target(LABELS, TARGET_BOXES, None)
    both = HungarianMatcher(num_points=256)
    assert _as_pairs(both(logits, boxes, pred_masks, [no_masks], generator=_gen())[0]) == QUERY_TO_TARGET
    with pytest.raises(ValueError, match="match_on"):
        HungarianMatcher(match_on=("box", "class"))


def test_zero_targets_and_fewer_queries_than_targets():
    logits, boxes = _predictions()
    empty = Target(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0, 32, 32))
    full = Target(LABELS, TARGET_BOXES)
    indices = HungarianMatcher(num_points=16)(logits.expand(2, -1, -1), boxes.expand(2, -1, -1),
                                              torch.zeros(2, 6, 8, 8), [empty, full])
    assert indices[0][0].tolist() == [] and indices[0][1].tolist() == []
    assert indices[0][0].dtype == torch.int64
    assert _as_pairs(indices[1]) == QUERY_TO_TARGET
    two = HungarianMatcher()(logits[:, [0, 2]], boxes[:, [0, 2]], None, [full])
    assert _as_pairs(two[0]) == {0: 2, 1: 0}


def test_class_cost_hand_value():
    cost = focal_class_cost(torch.tensor([[0.0, 10.0]]), torch.tensor([1, 0]), alpha=0.25, gamma=2.0)
    half = -math.log(0.5 + 1e-6)
    # logit 0: 0.25 * 0.25 * half (positive) - 0.75 * 0.25 * half (negative)
    assert cost[0, 1].item() == pytest.approx(0.0625 * half - 0.1875 * half, rel=1e-5)
    assert cost[0, 0].item() < -5  # a confident prediction of the target's label is cheap (negative)


def test_mask_costs_hand_values():
    logits = torch.tensor([[0.0, 0.0], [20.0, -20.0]])
    targets = torch.tensor([[1.0, 0.0]])
    ce = batch_sigmoid_ce_cost(logits, targets)
    assert ce[0, 0].item() == pytest.approx(math.log(2))
    assert ce[1, 0].item() == pytest.approx(0.0, abs=1e-6)
    dice = batch_dice_cost(logits, targets)
    assert dice[0, 0].item() == pytest.approx(1 - (2 * 0.5 + 1) / (1.0 + 1 + 1))
    assert dice[1, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_non_finite_costs_are_named():
    logits, boxes = _predictions()
    target = Target(LABELS, TARGET_BOXES, _square_masks(TARGET_BOXES))
    bad_boxes = boxes.clone()
    bad_boxes[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="box L1 cost of image 0"):
        HungarianMatcher()(logits, bad_boxes, None, [target])
    bad_masks = torch.zeros(1, 6, 8, 8)
    bad_masks[0, 2] = float("nan")
    with pytest.raises(ValueError, match="mask CE cost"):
        HungarianMatcher(num_points=16)(logits, boxes, bad_masks, [target])
    bad_logits = logits.clone()
    bad_logits[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="class cost"):
        HungarianMatcher()(bad_logits, boxes, None, [target])


def test_bad_inputs():
    logits, boxes = _predictions()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        HungarianMatcher()(logits, boxes, None, [Target(torch.tensor([3]), TARGET_BOXES[:1])])
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        HungarianMatcher()(logits, boxes, None, [Target(LABELS, TARGET_BOXES)] * 2)
    with pytest.raises(ValueError, match=r"Target.boxes must be \[4, 4\]"):
        Target(LABELS, TARGET_BOXES[:3])
    with pytest.raises(ValueError, match="Target.labels"):
        Target(LABELS.float(), TARGET_BOXES)
    with pytest.raises(ValueError, match="Target.masks"):
        Target(LABELS, TARGET_BOXES, torch.zeros(3, 8, 8))
