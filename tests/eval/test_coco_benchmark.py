"""COCO and LVIS benchmarks end to end on three shapeworld scenes written in the official formats, with nano."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from eval.benchmarks.coco import CocoBenchmark
from eval.benchmarks.lvis import LvisBenchmark
from eval.coco_metrics import COCO_STATS, coco_scores
from eval.lvis_metrics import LVIS_STATS, lvis_scores
from eval.models import EvalModel
from eval.plots import save_per_category_ap, save_pr_curve
from eval.predictions import check_results, load_results
from eval.runner import run_benchmark
from glee_core.predictor import GleePredictor
from train.data.shapeworld.export import write_shapeworld

NUM_SCENES = 3


def write_lvis(root: Path, coco_json: Path) -> Path:
    """``<root>/lvis_v1_val.json`` made from a COCO file: images found through ``coco_url`` (``val/<file>``),
    every category not on an image verified absent, frequencies r / c / f in turn, no ``iscrowd``."""
    data = json.loads(coco_json.read_text())
    present: dict[int, set[int]] = {image["id"]: set() for image in data["images"]}
    for annotation in data["annotations"]:
        present[annotation["image_id"]].add(annotation["category_id"])
        del annotation["iscrowd"]
    for index, category in enumerate(data["categories"]):
        category.update(frequency="rcf"[index % 3], synonyms=[category["name"]], synset=f"{category['name']}.n.01",
                        image_count=1, instance_count=1)
    for image in data["images"]:
        image["coco_url"] = f"http://images.cocodataset.org/val/{image.pop('file_name')}"
        image["neg_category_ids"] = [c["id"] for c in data["categories"] if c["id"] not in present[image["id"]]]
        image["not_exhaustive_category_ids"] = []
    path = root / "lvis_v1_val.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapeworld_detection")
    write_lvis(root, write_shapeworld(root, "detection", "val", NUM_SCENES, seed=0, progress=False))
    return root


@pytest.fixture(scope="module")
def model() -> EvalModel:
    return EvalModel("glee", GleePredictor.from_pretrained("nano"), "nano", "x", True, "all weights loaded")


@pytest.fixture(scope="module", params=["coco", "lvis"])
def run(request, data_root, model):
    """(benchmark, records, result, scorer, stat names) of one nano run."""
    if request.param == "coco":
        benchmark, scorer, names = CocoBenchmark(data_root, "val"), coco_scores, COCO_STATS
    else:
        benchmark, scorer, names = LvisBenchmark(data_root, "val"), lvis_scores, LVIS_STATS
    records, result = run_benchmark(benchmark, model, progress=False)
    return benchmark, records, result, scorer, names


def flat(records: list[list[dict]]) -> list[dict]:
    return [result for record in records for result in record]


def test_metrics_match_the_scorer(run):
    benchmark, records, result, scorer, names = run
    assert list(result.metrics) == [f"{t}/{name}" for t in ("bbox", "segm") for name in names]
    assert [label for label, _ in result.rows] == [f"{p} {name}" for p in ("box", "mask") for name in names]
    for iou_type in ("bbox", "segm"):
        stats = scorer(benchmark.ground_truth, flat(records), iou_type).stats
        assert {name: result.metrics[f"{iou_type}/{name}"] for name in names} == pytest.approx(stats, nan_ok=True)
    assert not math.isnan(result.metrics["bbox/AP"]) and not math.isnan(result.metrics["segm/AP"])
    assert all(0.0 <= value <= 1.0 for value in result.metrics.values() if not math.isnan(value))
    assert result.per_category and all(0.0 <= ap <= 1.0 for ap in result.per_category.values())
    recall, precision = result.pr_curve
    assert len(recall) == len(precision) == 101
    assert result.counts == {"images": NUM_SCENES, "annotations": len(benchmark.ground_truth["annotations"]),
                             "predictions": len(flat(records))}


def test_ground_truth_as_predictions_scores_one(run):
    benchmark = run[0]
    records = [[{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
                 "segmentation": a["segmentation"]} for a in benchmark.ground_truth["annotations"]
                if a["image_id"] == image_id] for image_id, _ in benchmark.images]
    metrics = benchmark.score(records).metrics
    assert metrics["bbox/AP"] == pytest.approx(1.0) and metrics["segm/AP"] == pytest.approx(1.0)


def test_partial_run_scores_only_its_images(run):
    benchmark, records, _, scorer, _ = run
    result = benchmark.score(records[:2])
    gt = benchmark.ground_truth_of_first(2)
    assert result.counts["images"] == 2 and len(gt["images"]) == 2
    assert result.metrics["segm/AP"] == pytest.approx(scorer(gt, flat(records[:2]), "segm").stats["AP"])


def test_write_predictions_round_trip(run, tmp_path):
    benchmark, records = run[0], run[1]
    path = benchmark.write_predictions(records, tmp_path / "out" / "results.json")
    loaded = load_results(path)
    check_results(loaded, benchmark.ground_truth, need_masks=True)
    assert loaded == flat(records)


def test_settings(run):
    settings = run[0].settings()
    assert settings["split"] == "val" and settings["iou_types"] == ["bbox", "segm"]
    assert Path(settings["annotation_file"]).is_file()


@pytest.mark.parametrize("make, expected", [
    (lambda root: CocoBenchmark(root),
     r"annotations/instances_val2017\.json\nExpected layout: <data_root>/annotations"),
    (lambda root: LvisBenchmark(root), r"lvis_v1_val\.json\nExpected layout: <data_root>/lvis_v1_<split>\.json"),
])
def test_missing_annotations_name_the_path(tmp_path, make, expected):
    with pytest.raises(FileNotFoundError, match=r"annotations not found; tried:\n  .*" + expected):
        make(tmp_path)


def test_plots_of_a_run(run, tmp_path):
    result = run[2]
    many = {f"category {i}": i / 100 for i in range(100)}  # more than fit: the lowest and highest 20 are drawn
    paths = [save_per_category_ap(result.per_category, tmp_path / "ap.png", "run"),
             save_per_category_ap(many, tmp_path / "many.png", "many"),
             save_pr_curve(*result.pr_curve, tmp_path / "pr.png", "run")]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in paths)
