"""coco_scores against AP values computed by hand from pycocotools' definition (101-point interpolation)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from eval.coco_metrics import COCO_STATS, coco_scores

SIZE = 200  # image side, pixels


def rle(box: list[float]) -> dict:
    """Compressed RLE (str counts) of the filled xywh ``box``."""
    x, y, w, h = (int(v) for v in box)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    mask[y:y + h, x:x + w] = 1
    encoded = mask_utils.encode(mask)
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


def ground_truth(boxes_per_image: list[list[list[float]]]) -> dict:
    """One image per entry, every box of category 1 ("a"); category 2 ("b") has no ground truth."""
    images, annotations = [], []
    for image_id, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": image_id, "height": SIZE, "width": SIZE, "file_name": f"{image_id}.png"})
        for box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "bbox": box, "area": float(box[2] * box[3]), "segmentation": rle(box)})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def detection(image_id: int, box: list[float], score: float, category_id: int = 1) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score, "segmentation": rle(box)}


BOX = [50.0, 50.0, 100.0, 100.0]  # area 10000 > 96²: a "large" object


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_prediction_scores_one(iou_type):
    scores = coco_scores(ground_truth([[BOX]]), [detection(1, BOX, 0.9)], iou_type)
    assert list(scores.stats) == list(COCO_STATS)
    for name in ("AP", "AP50", "AP75", "APl", "AR1", "AR10", "AR100", "ARl"):
        assert scores.stats[name] == pytest.approx(1.0), name
    for name in ("APs", "APm", "ARs", "ARm"):  # no ground truth in those area bins
        assert math.isnan(scores.stats[name]), name
    assert scores.per_category == {"a": pytest.approx(1.0)}  # "b" has no ground truth: omitted
    recall, precision = scores.pr_curve
    assert recall == pytest.approx(np.linspace(0, 1, 101)) and precision == pytest.approx([1.0] * 101)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_higher_scored_false_positive(iou_type):
    # Detections by score: a miss (IoU 0), then a hit with IoU 0.72 (100 x 72 inside the 100 x 100 box).
    # Cumulative precision [0, 1/2] at recall [0, 1]; made non-increasing: [1/2, 1/2], so all 101 recall points
    # read 1/2 at every IoU threshold the hit passes (0.50 ... 0.70: 5 of 10) and 0 at the others.
    results = [detection(1, [0.0, 0.0, 40.0, 40.0], 0.9), detection(1, [50.0, 50.0, 100.0, 72.0], 0.8)]
    scores = coco_scores(ground_truth([[BOX]]), results, iou_type)
    assert scores.stats["AP50"] == pytest.approx(0.5)
    assert scores.stats["AP75"] == pytest.approx(0.0)
    assert scores.stats["AP"] == pytest.approx(5 * 0.5 / 10)
    assert scores.stats["AR100"] == pytest.approx(5 / 10)  # recall 1 at 5 of the 10 thresholds


def test_101_point_interpolation():
    # Two objects (one per image); detections by score: hit, miss, hit. Recall [1/2, 1/2, 1], precision
    # [1, 1/2, 2/3] -> non-increasing [1, 2/3, 2/3]. Recall points 0.00 ... 0.50 (51 points) read 1, the 50
    # points 0.51 ... 1.00 read 2/3; every hit is exact, so all thresholds agree.
    gt = ground_truth([[BOX], [BOX]])
    results = [detection(1, BOX, 0.9), detection(1, [0.0, 0.0, 30.0, 30.0], 0.8), detection(2, BOX, 0.7)]
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    scores = coco_scores(gt, results, "bbox")
    assert scores.stats["AP"] == pytest.approx(expected) and scores.stats["AP50"] == pytest.approx(expected)
    assert scores.per_category == {"a": pytest.approx(expected)}
    assert scores.pr_curve[1] == pytest.approx([1.0] * 51 + [2 / 3] * 50)


def test_no_predictions_score_zero():
    scores = coco_scores(ground_truth([[BOX]]), [], "segm")
    assert scores.stats["AP"] == 0.0 and scores.stats["AP50"] == 0.0 and scores.stats["AR100"] == 0.0
    assert scores.per_category == {"a": 0.0} and scores.pr_curve[1] == [0.0] * 101


def test_detection_of_a_category_without_ground_truth_is_harmless():
    scores = coco_scores(ground_truth([[BOX]]), [detection(1, BOX, 0.9), detection(1, BOX, 0.95, 2)], "bbox")
    assert scores.stats["AP"] == pytest.approx(1.0) and scores.per_category == {"a": pytest.approx(1.0)}


def test_inputs_are_not_modified():
    gt, results = ground_truth([[BOX]]), [detection(1, BOX, 0.9)]
    before = copy.deepcopy((gt, results))
    coco_scores(gt, results, "segm")
    assert (gt, results) == before


def test_no_ground_truth_is_an_error():
    with pytest.raises(ValueError, match=r"the ground truth has no annotations \(1 images\): AP is undefined"):
        coco_scores(ground_truth([[]]), [detection(1, BOX, 0.9)], "bbox")


def test_unknown_iou_type():
    with pytest.raises(ValueError, match=r"iou_type must be one of \('bbox', 'segm'\), got 'mask'"):
        coco_scores(ground_truth([[BOX]]), [], "mask")
