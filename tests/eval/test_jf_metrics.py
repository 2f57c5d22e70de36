"""J&F (DAVIS convention) on hand-made masks: J as IoU, F's boundary tolerance, empty masks, averaging."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval.jf_metrics import JFScores, boundary_f, boundary_map, region_similarity

EMPTY = np.zeros((100, 100), bool)  # diagonal 141.4 px → tolerance ceil(1.13) = 2 px


def _square(top, left, side=10):
    mask = EMPTY.copy()
    mask[top:top + side, left:left + side] = True
    return mask


def _band(top):
    """Rows top..top+9 across the whole image: its boundary is rows top-1 and top+9 only."""
    mask = EMPTY.copy()
    mask[top:top + 10] = True
    return mask


def test_j_is_iou_and_one_when_both_empty():
    assert region_similarity(_square(10, 10), _square(10, 11)) == pytest.approx(90 / 110)
    assert region_similarity(EMPTY, EMPTY) == 1.0
    assert region_similarity(_square(10, 10), EMPTY) == 0.0


def test_boundary_map_follows_seg2bmap():
    assert np.flatnonzero(boundary_map(_band(10)).any(axis=1)).tolist() == [9, 19]
    assert not boundary_map(np.ones((5, 5), bool)).any()


def test_f_identical_shifted_and_empty():
    assert boundary_f(_square(10, 10), _square(10, 10)) == 1.0
    assert boundary_f(_band(10), _band(12)) == 1.0  # boundaries 2 px apart: within tolerance
    assert boundary_f(_band(10), _band(13)) == 0.0  # 3 px apart: beyond it
    assert boundary_f(_square(10, 10), _square(60, 60)) == 0.0
    assert boundary_f(EMPTY, EMPTY) == 1.0
    assert boundary_f(_square(10, 10), EMPTY) == 0.0
    assert boundary_f(EMPTY, _square(10, 10)) == 0.0


def test_f_is_the_harmonic_mean_of_boundary_precision_and_recall():
    # truth: two bands (4 boundary rows); prediction: the first band only (2 rows, all matched) → P 1, R 1/2
    truth = _band(10) | _band(50)
    assert boundary_f(_band(10), truth) == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_scores_average_frames_then_expressions():
    scores = JFScores()
    j, f = scores.add(np.stack([_square(10, 10), EMPTY]), np.stack([_square(10, 10), _square(10, 10)]))
    assert (j, f) == (pytest.approx(0.5), pytest.approx(0.5))
    scores.add(np.stack([EMPTY]), np.stack([EMPTY]))
    assert len(scores) == 2
    assert (scores.J, scores.F, scores.JF) == (pytest.approx(0.75), pytest.approx(0.75), pytest.approx(0.75))
    assert math.isnan(JFScores().JF)
    with pytest.raises(ValueError, match="of one shape"):
        scores.add(np.stack([EMPTY]), np.stack([EMPTY, EMPTY]))
