"""Calibrated "no such object" evaluation: metrics, the shapeworld and refer-layout sample sets, and the
``gleekit eval calibrate-refer`` / ``gleekit eval rejection`` commands end to end on nano."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from eval.models import EvalModel
from eval.rejection import (
    RejectionSample,
    ShapeworldRejectionBenchmark,
    auroc,
    expected_calibration_error,
    fit_calibrator,
    rejection_result,
    sample_labels,
)
from eval.runner import collect_records
from glee_core.mask_ops import masks_to_boxes
from glee_core.rejection import RejectionCalibrator
from glee_core.structures import Categories, Detections, Expression
from train.data.shapeworld import generate_scene, referring_expressions, scene_seed

NUM_SCENES = 5


class Oracle:
    """Scores 0.9 and the right box when the prompt describes something in the scene, else 0.1 and a wrong box."""

    def __init__(self, split: str, seed: int):
        self.scenes = {}
        for i in range(NUM_SCENES):
            scene = generate_scene(scene_seed(split, i, seed), split=split)
            self.scenes[scene.image.tobytes()] = scene
        self.prompts = []

    def predict(self, image, prompt, topk=None):
        scene = self.scenes[image.tobytes()]
        self.prompts.append(prompt)
        if isinstance(prompt, Expression):
            rng = np.random.default_rng([scene.seed, 7])
            known = {e.text: e.target for e in referring_expressions(scene, rng)}
            found = [scene.objects[known[prompt.text]]] if prompt.text in known else []
        else:
            found = [o for o in scene.objects if o.shape == prompt.names[0]]
        if found:
            masks, score = np.stack([o.mask for o in found]), 0.9
        else:
            masks, score = np.zeros((1, *image.shape[:2]), bool), 0.1
            masks[0, :3, :3] = True
        return Detections(boxes=masks_to_boxes(masks), scores=np.full(len(masks), score, np.float32),
                          labels=np.zeros(len(masks), int), label_names=["x"], image_size=image.shape[:2], masks=masks)


def sample(positive, iou, score):
    logit = float(np.log(score / (1 - score)))
    return RejectionSample("t", positive, iou, [logit, score], "kind" if positive else "absent")


def test_auroc_and_ece():
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(auroc(np.array([0.5, 0.5]), np.array([1, 1])))
    assert expected_calibration_error(np.array([0.25] * 4), np.array([1, 0, 0, 0])) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0.95, 0.95]), np.array([0, 0])) == pytest.approx(0.95)


def test_labels_and_metrics_count_a_rejected_positive_as_a_miss():
    samples = [sample(True, 0.9, 0.9), sample(True, 0.9, 0.2), sample(True, 0.1, 0.8), sample(False, 0.0, 0.1),
               sample(False, 0.0, 0.7)]
    assert sample_labels(samples, "exists").tolist() == [1, 1, 1, 0, 0]
    assert sample_labels(samples, "correct").tolist() == [1, 1, 0, 0, 0]
    calibrator = RejectionCalibrator(np.array([1.0, 0.0]), 0.0, np.zeros(2), np.ones(2), 0.5)  # p = score
    metrics = rejection_result(samples, calibrator).metrics
    assert metrics["negatives rejected"] == 0.5 and metrics["negatives rejected (absent)"] == 0.5
    assert metrics["positives accepted"] == pytest.approx(2 / 3)
    assert metrics["Acc@0.5 without rejection"] == pytest.approx(2 / 3)
    assert metrics["Acc@0.5 after rejection"] == pytest.approx(1 / 3)  # the second positive hit but was rejected
    assert metrics["AUROC (present vs absent)"] == pytest.approx(5 / 6)
    assert "AUROC (right box vs rest)" not in metrics and 0 <= metrics["ECE"] <= 1


@pytest.mark.parametrize("prompt", ["referring", "category"])
def test_shapeworld_samples_fit_and_score_with_an_oracle(prompt):
    oracle = Oracle("val", 3)
    benchmark = ShapeworldRejectionBenchmark(NUM_SCENES, split="val", seed=3, per_scene=2, prompt=prompt)
    records = collect_records(benchmark, EvalModel.wrap(oracle), progress=False)
    samples = [s for record in records for s in record]
    positives = [s for s in samples if s.positive]
    assert positives and len(samples) - len(positives) >= NUM_SCENES
    assert all(len(record) <= 4 for record in records)
    calibrator = fit_calibrator(samples, prompt=prompt, data={"split": "val"})
    metrics = rejection_result(samples, calibrator).metrics
    assert metrics["negatives rejected"] == 1 and metrics["Acc@0.5 after rejection"] == 1
    assert metrics["AUROC (present vs absent)"] == 1
    assert calibrator.fit_summary["data"] == {"split": "val"}
    if prompt == "referring":  # the first positive of each scene is the expression gleekit eval shapeworld asks
        for index in range(NUM_SCENES):
            scene = generate_scene(scene_seed("val", index, 3), split="val")
            rng = np.random.default_rng([scene.seed, 7])
            expressions = referring_expressions(scene, rng)
            assert records[index][0].text == expressions[rng.integers(len(expressions))].text
    else:
        assert all(isinstance(p, Categories) and len(p.names) == 1 for p in oracle.prompts)
    with pytest.raises(ValueError, match="needs a calibration"):
        benchmark.score(records)
    benchmark.calibrator = calibrator
    assert benchmark.score(records).metrics["negatives rejected"] == 1


def invoke(*args: str):
    from gleekit.cli import app

    return CliRunner().invoke(app, ["eval", *args])


def test_cli_fits_on_nano_and_reports_held_out_numbers(tmp_path):
    calib = tmp_path / "calib.json"
    fitted = invoke("calibrate-refer", "--model", "nano", "--num-scenes", "3", "--out", str(calib))
    assert fitted.exit_code == 0, fitted.output
    data = json.loads(calib.read_text())
    assert data["model"] == "nano" and len(data["model_sha256"]) == 64 and data["prompt"] == "referring"
    assert data["fit"]["data"]["split"] == "val" and data["fit"]["samples"] >= 6 and "negatives rejected" in fitted.output
    report_path = tmp_path / "report.json"
    held_out = invoke("rejection", "--model", "nano", "--calibration", str(calib), "--num-scenes", "2",
                      "--json-out", str(report_path))
    assert held_out.exit_code == 0, held_out.output
    report = json.loads(report_path.read_text())
    metrics = report["metrics"]
    for name in ("negatives rejected", "positives accepted", "Acc@0.5 after rejection", "Brier score", "ECE"):
        assert 0 <= metrics[name] <= 1, name
    assert metrics["Acc@0.5 after rejection"] <= metrics["Acc@0.5 without rejection"]
    assert report["settings"]["split"] == "test" and report["settings"]["seed"] == 2026
    assert report["settings"]["calibration"]["threshold"] == data["threshold"]
    assert report["counts"]["positives"] >= 2 and report["counts"]["negatives"] >= 2

    data["model_sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(data))
    other = invoke("rejection", "--calibration", str(tmp_path / "other.json"), "--num-scenes", "1")
    assert other.exit_code == 2 and "refit it for this model" in other.output
    del data["threshold"]
    (tmp_path / "broken.json").write_text(json.dumps(data))
    broken = invoke("rejection", "--calibration", str(tmp_path / "broken.json"), "--num-scenes", "1")
    assert broken.exit_code == 2 and "field 'threshold' is missing" in " ".join(broken.output.split())


def test_cli_fits_on_a_refer_layout_set(tmp_path):
    from train.data.shapeworld.export import write_shapeworld

    write_shapeworld(tmp_path, "referring", "val", 2, seed=4, progress=False)
    calib = tmp_path / "calib.json"
    common = ["calibrate-refer", "--data-root", str(tmp_path), "--dataset", "shapeworld", "--split", "val"]
    fitted = invoke(*common, "--limit", "6", "--out", str(calib))
    assert fitted.exit_code == 0, fitted.output
    data = json.loads(calib.read_text())["fit"]
    assert data["samples"] == 6 and data["positives"] == 3 and data["data"]["dataset"] == "shapeworld"
    assert data["data"]["negatives"].startswith("borrowed from other images")
    (tmp_path / "negatives.json").write_text(json.dumps([{"image_id": 999999, "sentence": "the purple cross"}]))
    bad = invoke(*common, "--negatives", str(tmp_path / "negatives.json"), "--out", str(calib))
    assert bad.exit_code == 2 and "entry 0 image_id 999999 is not an image of this split" in " ".join(bad.output.split())
    category = invoke(*common, "--prompt", "category", "--out", str(calib))
    assert category.exit_code == 2 and "referring prompts only" in category.output
