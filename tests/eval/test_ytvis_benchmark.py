"""The YouTube-VIS benchmark on two shapeworld videos written in the 2021 layout, with the nano model."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from eval.benchmarks.ytvis import YtvisBenchmark
from eval.models import EvalModel
from eval.runner import run_benchmark
from eval.ytvis_metrics import METRICS
from glee_core.mask_ops import encode_rle
from glee_core.predictor import GleePredictor
from train.data.shapeworld.export import write_shapeworld


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvis")
    write_shapeworld(root, "video", "val", 2, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def run(data_root):
    model = EvalModel("glee", GleePredictor.from_pretrained("nano"), "nano", "x", True, "all weights loaded")
    benchmark = YtvisBenchmark(data_root, "val")
    records, result = run_benchmark(benchmark, model, progress=False)
    return benchmark, records, result


def test_nano_scores_are_the_official_metrics_in_range(run):
    benchmark, records, result = run
    assert [name for name, _ in result.rows] == list(METRICS) == list(result.metrics)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values() if not math.isnan(v))
    assert not math.isnan(result.metrics["AP"])
    assert result.counts["videos"] == 2 and result.counts["predicted_tracks"] == sum(len(r) for r in records)
    assert all(0.0 <= v <= 1.0 for v in result.per_category.values())
    assert benchmark.settings()["annotation_file"].endswith("val/instances.json")


def test_ground_truth_tracks_as_results_score_one(run):
    benchmark = run[0]
    records = [[{"video_id": video.video_id, "category_id": track.category_id, "score": 1.0,
                 "segmentations": [encode_rle(track.mask(t, video.height, video.width)) if s is not None else None
                                   for t, s in enumerate(track.segmentations)]}
                for track in video.tracks] for video in benchmark.videos]
    result = benchmark.score(records)
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert result.metrics["AR1"] <= result.metrics["AR10"] == pytest.approx(1.0)
    assert benchmark.score(records[:1]).counts == {"videos": 1, "gt_tracks": len(benchmark.videos[0].tracks),
                                                   "predicted_tracks": len(records[0])}


def test_predictions_round_trip_as_the_submission_list(run, tmp_path):
    benchmark, records, _ = run
    path = benchmark.write_predictions(records, tmp_path / "out")
    assert path.name == "results.json"
    assert json.loads(path.read_text()) == [result for record in records for result in record]


def test_2019_layout_and_missing_files(data_root, tmp_path):
    (tmp_path / "annotations").mkdir()
    shutil.copy(data_root / "val" / "instances.json", tmp_path / "annotations" / "instances_val.json")
    with pytest.raises(FileNotFoundError) as error:
        YtvisBenchmark(tmp_path, "test")
    for tried in ("test/instances.json", "annotations/instances_test.json", "test.json"):
        assert str(tmp_path / tried) in str(error.value)
    benchmark = YtvisBenchmark(tmp_path, "val", frames_root=data_root / "val" / "JPEGImages")
    assert benchmark.annotation_file == tmp_path / "annotations" / "instances_val.json" and len(benchmark) == 2
    with pytest.raises(ValueError, match="mode must be one of"):
        YtvisBenchmark(tmp_path, "val", mode="batch")
