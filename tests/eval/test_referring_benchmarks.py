"""RefCOCO-style and ReasonSeg runners: hand-computed metrics, fixtures in the official formats written by the
shapeworld writer, an oracle that scores 1, and missing-layout errors."""
from __future__ import annotations

import numpy as np
import pytest

from eval.benchmarks.reasonseg import ReasonRecord, ReasonSegBenchmark
from eval.benchmarks.refer import ReferBenchmark, ReferRecord, referring_result
from eval.models import EvalModel
from eval.runner import run_benchmark
from glee_core.image_io import load_image
from glee_core.mask_ops import masks_to_boxes
from glee_core.structures import Detections, Expression
from train.data.shapeworld.export import write_shapeworld


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    write_shapeworld(root, "referring", "test", 2, seed=3, progress=False)
    write_shapeworld(root, "reasoning", "test", 2, seed=3, progress=False)
    return root


class Oracle:
    """Answers every referring prompt with the true mask, looked up by (image bytes, text)."""

    def __init__(self, answers: dict[tuple[bytes, str], np.ndarray]):
        self.answers = answers

    def predict(self, image, prompt, topk=None):
        assert isinstance(prompt, Expression) and topk == 1
        mask = self.answers[image.tobytes(), prompt.text][None]
        return Detections(boxes=masks_to_boxes(mask), scores=np.ones(1, np.float32), labels=np.zeros(1, int),
                          label_names=[prompt.text], image_size=mask.shape[1:], masks=mask)


def test_referring_metrics_by_hand():
    records = [ReferRecord(1, 0.6, 50, 100), ReferRecord(2, 0.4, 0, 0), ReferRecord(3, 0.0, 0, 40)]
    metrics = referring_result(records).metrics
    assert metrics["REC Acc@0.5"] == pytest.approx(1 / 3)
    assert metrics["RES cIoU"] == pytest.approx(50 / 140)
    # per-sentence IoU: 50 / (100 + 1e-5), 1 (both empty), 0
    assert metrics["RES gIoU"] == pytest.approx((50 / (100 + 1e-5) + 1 + 0) / 3)
    assert metrics["RES Prec@0.5"] == pytest.approx(1 / 3)  # 0.4999999 misses 0.5, the empty pair hits
    assert metrics["RES Prec@0.9"] == pytest.approx(1 / 3)


def test_refer_runner_oracle_scores_one(data_root):
    benchmark = ReferBenchmark(data_root, "shapeworld", "test")
    answers = {}
    for ref, sentence, _ in benchmark.samples:
        image = ref.image
        answers[load_image(image.path).tobytes(), Expression(sentence).text] = image.instances[0].mask(image.height,
                                                                                                       image.width)
    records, result = run_benchmark(benchmark, EvalModel.wrap(Oracle(answers)), progress=False)
    assert len(records) == len(benchmark) > 5
    assert result.metrics["REC Acc@0.5"] == 1.0 and result.metrics["RES cIoU"] == pytest.approx(1.0)
    assert result.metrics["RES gIoU"] == pytest.approx(1.0, abs=1e-6)
    assert result.counts == {"sentences": len(benchmark)}
    assert benchmark.settings()["split_by"] == "unc"


def test_refer_runner_reports_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"refs\(umd\)\.p.*lichengunc/refer layout"):
        ReferBenchmark(tmp_path, "refcocog", "val")


def test_reasonseg_groups_short_and_long():
    records = [ReasonRecord("a", False, 30, 60), ReasonRecord("b", True, 10, 10), ReasonRecord("c", True, 0, 20)]
    benchmark = ReasonSegBenchmark.__new__(ReasonSegBenchmark)
    metrics = benchmark.score(records).metrics
    assert metrics["short gIoU"] == pytest.approx(30 / (60 + 1e-5)) and metrics["short cIoU"] == pytest.approx(0.5)
    assert metrics["long cIoU"] == pytest.approx(10 / 30)
    assert metrics["long gIoU"] == pytest.approx((10 / (10 + 1e-5) + 0) / 2)
    assert metrics["overall cIoU"] == pytest.approx(40 / 90)


def test_reasonseg_runner_oracle_scores_one(data_root):
    benchmark = ReasonSegBenchmark(data_root, "test")
    answers = {}
    for record in benchmark.records:
        image = load_image(record.image_path)
        answers[image.tobytes(), Expression(record.texts[0]).text] = record.mask(*image.shape[:2]) == 1
    records, result = run_benchmark(benchmark, EvalModel.wrap(Oracle(answers)), progress=False)
    assert len(records) == len(benchmark) and result.metrics["overall cIoU"] == pytest.approx(1.0)
    assert result.counts["short"] + result.counts["long"] == result.counts["overall"]


def test_reasonseg_missing_split_lists_tried_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)tried:.*ReasonSeg/val.*reason_seg/ReasonSeg/val"):
        ReasonSegBenchmark(tmp_path, "val")
