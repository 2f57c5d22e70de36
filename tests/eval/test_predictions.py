"""Results files: every malformed input is refused with a message naming the record and the problem."""
from __future__ import annotations

import json

import pytest

from eval.predictions import PredictionError, check_results, load_results

GT = {"images": [{"id": 1, "height": 20, "width": 30}, {"id": 2, "height": 10, "width": 10}],
      "annotations": [], "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}


def good(**changes) -> dict:
    record = {"image_id": 1, "category_id": 3, "bbox": [1.0, 2.0, 5.0, 4.0], "score": 0.5,
              "segmentation": {"size": [20, 30], "counts": "0"}}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def test_valid_results_pass():
    check_results([good(), good(image_id=2, category_id=7, segmentation=None)], GT)


@pytest.mark.parametrize("record, message", [
    ("not a dict", r"prediction 1: must be a dict with image_id, category_id, bbox"),
    (good(image_id=9), r"prediction 1: image_id 9 is not one of the ground-truth image ids \(those are \[1, 2\]\)"),
    (good(image_id="1"), r"prediction 1: 'image_id' must be an integer id, got '1'"),
    ({"category_id": 3}, r"prediction 1: missing 'image_id'"),
    (good(category_id=4),
     r"prediction 1: category_id 4 is not one of the ground-truth category ids \(those are \[3, 7\]\)"),
    (good(score=None), r"prediction 1: missing 'score'"),
    (good(score=float("nan")), r"prediction 1: 'score' must be a finite number, got nan"),
    (good(score="high"), r"prediction 1: 'score' must be a finite number, got 'high'"),
    (good(bbox=None), r"prediction 1: missing 'bbox'"),
    (good(bbox=[1, 2, 3]),
     r"prediction 1: 'bbox' must be \[x, y, width, height\] \(4 finite numbers\), got \[1, 2, 3\]"),
    (good(bbox=[5, 5, 2, -1]), r"prediction 1: 'bbox' \[5, 5, 2, -1\] has a negative width or height"),
    (good(segmentation=[[0, 0, 1, 0, 1, 1]]), r"prediction 1: 'segmentation' must be an RLE dict"),
    (good(segmentation={"size": [30, 20], "counts": "0"}),
     r"prediction 1: 'segmentation' RLE size \[30, 20\] differs from the image's \[height, width\] \[20, 30\]"),
    (good(segmentation={"size": [20, 30], "counts": [600]}),
     r"prediction 1: 'segmentation' counts must be a compressed RLE string .* got list"),
])
def test_first_bad_record_is_named(record, message):
    with pytest.raises(PredictionError, match=message):
        check_results([good(), record, "also bad"], GT)


def test_masks_required_for_mask_evaluation():
    check_results([good(segmentation=None)], GT)
    with pytest.raises(PredictionError, match=r"prediction 0: missing 'segmentation' \(mask evaluation needs"):
        check_results([good(segmentation=None)], GT, need_masks=True)


def test_results_must_be_a_list():
    with pytest.raises(PredictionError, match=r"predictions must be a list of dicts .* got dict"):
        check_results({"annotations": []}, GT)


def test_load_round_trip(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([good()]))
    assert load_results(path) == [good()]


@pytest.mark.parametrize("content, error, message", [
    (None, FileNotFoundError, r"results file not found: .*results\.json"),
    ("[{", PredictionError, r"results\.json is not a JSON file: "),
    ('{"annotations": []}', PredictionError,
     r"results\.json must hold a JSON list of predictions .* got a dict with keys \['annotations'\]"),
    ("[]", PredictionError, r"results\.json contains no predictions"),
])
def test_load_errors(tmp_path, content, error, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=message):
        load_results(path)
