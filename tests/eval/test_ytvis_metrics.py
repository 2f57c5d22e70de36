"""YouTube-VIS track AP on hand-made toy videos: track IoU, thresholds, ranking, size bins and validation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval.predictions import PredictionError
from eval.ytvis_metrics import METRICS, track_iou, ytvis_scores
from glee_core.mask_ops import encode_rle
from train.data.masks import uncompressed_rle


def _mask(size, rows, cols):
    mask = np.zeros(size, bool)
    mask[rows, cols] = True
    return mask


def _gt(tracks, size=(10, 10)):
    """One video of ``len(tracks[0])`` frames; ``tracks`` are lists of masks (None = absent), category 1."""
    length = len(tracks[0])
    return {
        "videos": [{"id": 7, "height": size[0], "width": size[1], "length": length,
                    "file_names": [f"v/{t:05d}.jpg" for t in range(length)]}],
        "annotations": [{"id": 100 + k, "video_id": 7, "category_id": 1, "iscrowd": 0,
                         "segmentations": [uncompressed_rle(m) if m is not None else None for m in track]}
                        for k, track in enumerate(tracks)],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}],
    }


def _result(masks, score=0.9, video_id=7, category_id=1):
    return {"video_id": video_id, "category_id": category_id, "score": score,
            "segmentations": [encode_rle(m) if m is not None else None for m in masks]}


ROW0 = _mask((10, 10), 0, slice(None))  # 10 px
SIX = _mask((10, 10), 5, slice(0, 6))  # 6 px


def test_track_iou_counts_an_absent_frame_in_the_union():
    gt = [encode_rle(ROW0), encode_rle(SIX)]
    assert track_iou([encode_rle(ROW0), None], gt) == pytest.approx(10 / 16)
    half = _mask((10, 10), 0, slice(0, 5))  # 5 px inside ROW0; frame 1: 6 px against nothing
    assert track_iou([encode_rle(half), encode_rle(SIX)], [encode_rle(ROW0), None]) == pytest.approx(5 / 16)
    assert track_iou([None, None], [None, None]) == 0.0


def test_perfect_track_scores_one():
    scores = ytvis_scores(_gt([[ROW0, SIX]]), [_result([ROW0, SIX])])
    assert list(scores.metrics) == list(METRICS)
    for name in ("AP", "AP50", "AP75", "AR1", "AR10", "APs"):
        assert scores.metrics[name] == pytest.approx(1.0), name
    assert math.isnan(scores.metrics["APm"]) and math.isnan(scores.metrics["APl"])  # no medium / large truth
    assert scores.per_category == {"dog": pytest.approx(1.0)}  # "cat" has no ground truth


def test_track_iou_0625_passes_050_to_060_only():
    scores = ytvis_scores(_gt([[ROW0, SIX]]), [_result([ROW0, None])])  # IoU 10 / 16
    assert scores.metrics["AP50"] == pytest.approx(1.0)
    assert scores.metrics["AP75"] == pytest.approx(0.0)
    assert scores.metrics["AP"] == pytest.approx(0.3)  # matched at 0.50, 0.55, 0.60 of the ten thresholds


def test_a_higher_scored_false_track_halves_precision_and_takes_ar1():
    wrong = _mask((10, 10), 9, slice(None))
    scores = ytvis_scores(_gt([[ROW0, SIX]]), [_result([wrong, None], score=0.9), _result([ROW0, SIX], score=0.5)])
    assert scores.metrics["AP50"] == pytest.approx(0.5)
    assert scores.metrics["AR1"] == pytest.approx(0.0)
    assert scores.metrics["AR10"] == pytest.approx(1.0)


def test_size_bin_uses_the_mean_over_present_frames():
    big = _mask((200, 200), slice(0, 100), slice(None))  # 20000 px > 128²; counting the absent frame as 0 → small
    scores = ytvis_scores(_gt([[big, None]], size=(200, 200)), [_result([big, None])])
    assert scores.metrics["APm"] == pytest.approx(1.0)
    assert math.isnan(scores.metrics["APs"])


def test_no_results_scores_zero_and_no_ground_truth_is_an_error():
    scores = ytvis_scores(_gt([[ROW0, SIX]]), [])
    assert scores.metrics["AP"] == 0.0 and scores.metrics["AR10"] == 0.0
    with pytest.raises(ValueError, match="no annotations"):
        ytvis_scores({**_gt([[ROW0, SIX]]), "annotations": []}, [])


@pytest.mark.parametrize("change, message", [
    ({"video_id": 8}, "result 1: video_id 8 is not one of the ground-truth video ids"),
    ({"category_id": 3}, "result 1: category_id 3 is not one of the ground-truth category ids"),
    ({"segmentations": [None]}, "result 1: segmentations must list one entry per frame; got 1, video 7 has 2"),
    ({"segmentations": [encode_rle(np.zeros((5, 10), bool)), None]},
     r"result 1: frame 0: 'segmentation' RLE size \[5, 10\] differs"),
    ({"segmentations": [uncompressed_rle(ROW0), None]}, "result 1: frame 0: 'segmentation' counts must be a compressed"),
    ({"score": "high"}, "result 1: 'score' must be a finite number"),
    ({"score": None, "video_id": None}, "result 1: 'video_id' must be an integer id"),
])
def test_invalid_results_name_the_record(change, message):
    with pytest.raises(PredictionError, match=message):
        ytvis_scores(_gt([[ROW0, SIX]]), [_result([ROW0, SIX]), {**_result([ROW0, SIX]), **change}])
