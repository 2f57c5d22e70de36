"""lvis_scores: LVIS's federated rules as lvis-api applies them, on hand-made three-image ground truth."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from eval.lvis_metrics import LVIS_STATS, lvis_scores

SIZE = 200
BOX = [50.0, 50.0, 100.0, 100.0]
ELSEWHERE = [0.0, 0.0, 30.0, 30.0]
CATEGORIES = {1: ("apple", "f"), 2: ("banana", "c"), 3: ("cherry", "r")}


def ground_truth(neg: list[int] = (2,), not_exhaustive: list[int] = ()) -> dict:
    """Image i (1, 2, 3) holds one object of category i at BOX; image 1 lists ``neg`` / ``not_exhaustive``."""
    x, y, w, h = BOX
    images = [{"id": i, "height": SIZE, "width": SIZE, "coco_url": f"http://images.cocodataset.org/val2017/{i}.jpg",
               "neg_category_ids": list(neg) if i == 1 else [],
               "not_exhaustive_category_ids": list(not_exhaustive) if i == 1 else []} for i in (1, 2, 3)]
    annotations = [{"id": i, "image_id": i, "category_id": i, "bbox": BOX, "area": w * h,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]} for i in (1, 2, 3)]
    categories = [{"id": i, "name": name, "frequency": frequency, "synonyms": [name], "image_count": 1,
                   "instance_count": 1} for i, (name, frequency) in CATEGORIES.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def detection(image_id: int, category_id: int, box: list[float] = BOX, score: float = 0.8) -> dict:
    x, y, w, h = (int(v) for v in box)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    mask[y:y + h, x:x + w] = 1
    encoded = mask_utils.encode(mask)
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score,
            "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode()}}


PERFECT = [detection(i, i) for i in (1, 2, 3)]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_detections(iou_type):
    scores = lvis_scores(ground_truth(), PERFECT, iou_type)
    assert list(scores.stats) == list(LVIS_STATS)
    for name in ("AP", "AP50", "AP75", "APl", "APr", "APc", "APf", "AR@300"):
        assert scores.stats[name] == pytest.approx(1.0), name
    assert math.isnan(scores.stats["APs"]) and math.isnan(scores.stats["APm"])  # no small / medium objects
    assert scores.per_category == pytest.approx({"apple": 1.0, "banana": 1.0, "cherry": 1.0})


def test_unverified_category_is_ignored():
    # cherry is neither annotated on image 1 nor in its neg_category_ids: the detection is not evaluated.
    scores = lvis_scores(ground_truth(), PERFECT + [detection(1, 3, ELSEWHERE, score=0.9)], "bbox")
    assert scores.stats["AP"] == pytest.approx(1.0) and scores.stats["APr"] == pytest.approx(1.0)


def test_negative_category_counts_as_false_positive():
    # banana is in image 1's neg_category_ids: the detection is a false positive ranked above banana's hit,
    # so banana's AP is 1/2 (see test_coco_metrics.test_higher_scored_false_positive) and the mean (1 + 1/2 + 1) / 3.
    scores = lvis_scores(ground_truth(), PERFECT + [detection(1, 2, ELSEWHERE, score=0.9)], "bbox")
    assert scores.per_category["banana"] == pytest.approx(0.5)
    assert scores.stats["APc"] == pytest.approx(0.5) and scores.stats["APf"] == pytest.approx(1.0)
    assert scores.stats["AP"] == pytest.approx(2.5 / 3)


@pytest.mark.parametrize("not_exhaustive, expected", [((), 0.5), ((1,), 1.0)])
def test_not_exhaustive_category_ignores_unmatched_detections(not_exhaustive, expected):
    extra = detection(1, 1, ELSEWHERE, score=0.9)  # a second, unmatched apple on image 1
    scores = lvis_scores(ground_truth(not_exhaustive=not_exhaustive), PERFECT + [extra], "bbox")
    assert scores.per_category["apple"] == pytest.approx(expected)


def test_at_most_300_detections_per_image():
    # 300 higher-scored misses push the hit on image 2 out of the 300 kept; with 299 it stays in.
    misses = [detection(2, 2, ELSEWHERE, score=0.9) for _ in range(300)]
    assert lvis_scores(ground_truth(), PERFECT + misses, "bbox").per_category["banana"] == 0.0
    assert lvis_scores(ground_truth(), PERFECT + misses[1:], "bbox").per_category["banana"] > 0.0


def test_no_predictions_score_zero():
    scores = lvis_scores(ground_truth(), [], "segm")
    assert scores.stats["AP"] == 0.0 and scores.stats["AR@300"] == 0.0
    assert scores.per_category == {"apple": 0.0, "banana": 0.0, "cherry": 0.0}


def test_lvis_fields_are_required():
    gt = ground_truth()
    del gt["images"][1]["neg_category_ids"]
    with pytest.raises(ValueError, match=r"images\[1\] \(id 2\) needs a list 'neg_category_ids'"):
        lvis_scores(gt, PERFECT, "bbox")
    gt = ground_truth()
    gt["categories"][0]["frequency"] = "x"
    with pytest.raises(ValueError, match=r"categories\[0\] \(id 1\) needs 'frequency' in \('r', 'c', 'f'\), got 'x'"):
        lvis_scores(gt, PERFECT, "bbox")
