"""gIoU / cIoU as LISA computes them: ignore pixels, empty targets, and the two averages."""
from __future__ import annotations

import numpy as np
import pytest

from eval.segmentation_metrics import SegmentationScores, intersection_union


def test_ignore_pixels_leave_intersection_and_union():
    target = np.array([[1, 1, 255, 0]], np.uint8)
    prediction = np.array([[1, 0, 1, 1]], bool)
    assert intersection_union(prediction, target) == (1, 3)


def test_giou_and_ciou_differ_as_defined():
    scores = SegmentationScores()
    big = np.zeros((10, 10), bool)
    big[:, :8] = True
    assert scores.add(big, big) == pytest.approx(1.0)  # 80 px, perfect
    small_target = np.zeros((10, 10), bool)
    small_target[0, 0] = True
    assert scores.add(np.zeros((10, 10), bool), small_target) == 0.0  # 1 px, missed
    assert scores.giou == pytest.approx(0.5)
    assert scores.ciou == pytest.approx(80 / 81)


def test_empty_target_and_empty_prediction_count_as_one():
    scores = SegmentationScores()
    empty = np.zeros((3, 3), bool)
    assert scores.add(empty, empty) == 1.0
    assert scores.add(np.ones((3, 3), bool), empty) == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        intersection_union(np.zeros((2, 2), bool), np.zeros((3, 3), bool))
