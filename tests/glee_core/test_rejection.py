"""The "no such object" calibrator: features, fitting, threshold rules, the JSON file and its errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from glee_core.rejection import (
    FEATURES,
    CalibrationFileError,
    RejectionCalibrator,
    prediction_features,
)
from glee_core.structures import Detections


def detections(scores, labels=None, names=("thing",)):
    n = len(scores)
    return Detections(boxes=np.tile([[0, 0, 10, 10]], (n, 1)), scores=np.array(scores, np.float32),
                      labels=np.zeros(n, int) if labels is None else np.array(labels), label_names=list(names),
                      image_size=(20, 20))


def overlapping(n=300, seed=0):
    rng = np.random.default_rng(seed)
    features = np.r_[rng.normal(-1, 1, (n, 2)), rng.normal(1, 1, (n, 2))]
    return features, np.r_[np.zeros(n, int), np.ones(n, int)]


def test_features_of_a_prediction():
    logit = lambda s: math.log(s / (1 - s))  # noqa: E731
    assert prediction_features(detections([0.2, 0.7])) == pytest.approx([logit(0.7), 0.5], rel=1e-6)
    assert prediction_features(detections([0.6])) == pytest.approx([logit(0.6), 0.6], rel=1e-6)  # referring: 1 box
    empty = prediction_features(detections([]))
    assert empty[1] == 0 and empty[0] == pytest.approx(logit(1e-6)) and np.isfinite(empty).all()
    two = detections([0.9, 0.4, 0.3], labels=[0, 1, 1], names=("a", "b"))
    assert prediction_features(two, label=1) == pytest.approx([logit(0.4), 0.1], rel=1e-5)
    with pytest.raises(ValueError, match="label 2 does not index"):
        prediction_features(two, label=2)
    assert len(FEATURES) == 2


def test_separable_set_orders_probabilities_and_puts_the_threshold_between_the_classes():
    features = np.array([[-3.0, 0.1], [-2.0, 0.2], [-1.5, 0.1], [1.0, 0.5], [2.0, 0.4], [3.0, 0.6]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    calibrator = RejectionCalibrator.fit(features, labels)
    p = calibrator.probabilities(features)
    assert np.all(np.isfinite(calibrator.weights)) and calibrator.weights[0] > 0
    assert p[labels == 0].max() < calibrator.threshold <= p[labels == 1].min()
    assert p[0] < p[1] < p[3] < p[5]  # higher top score, higher probability
    assert calibrator.fit_summary["acceptance of positives"] == 1 and calibrator.fit_summary["rejection of negatives"] == 1
    assert calibrator.threshold_rule == "balanced" and calibrator.fit_summary["prior"] == 0.5
    strong, weak = detections([0.95]), detections([0.02])
    assert calibrator.accepts(strong) and not calibrator.accepts(weak)
    decision = calibrator.decide(weak)
    assert 0 <= decision.probability < calibrator.threshold and decision.accepted is False


def test_balanced_rule_and_target_rejection():
    features, labels = overlapping()
    balanced = RejectionCalibrator.fit(features, labels)
    p = balanced.probabilities(features)
    # a well-specified logistic model on a balanced, symmetric set: probabilities near the truth, threshold near 1/2
    assert 0.4 < balanced.threshold < 0.6
    assert abs(p[labels == 1].mean() - 0.5 - (0.5 - p[labels == 0].mean())) < 0.05
    strict = RejectionCalibrator.fit(features, labels, target_rejection=0.97)
    rejected = (strict.probabilities(features)[labels == 0] < strict.threshold).mean()
    assert rejected >= 0.97 and strict.threshold > balanced.threshold
    assert strict.threshold_rule == "target_rejection=0.97"
    # the lowest threshold that meets the target: the next lower fitted probability of a negative would not
    below = np.sort(p[labels == 0][p[labels == 0] < strict.threshold])[-1]
    assert (p[labels == 0] < below).mean() < 0.97


@pytest.mark.parametrize("features, labels, message", [
    (np.zeros((4, 2)), np.ones(4), "needs both positives"),
    (np.zeros((4, 2)), np.zeros(4), "got 0 positives and 4 negatives"),
    (np.zeros((4, 3)), np.array([0, 1, 0, 1]), r"features must be \[N, 2\]"),
    (np.zeros((4, 2)), np.array([0, 1, 0]), "one per feature row"),
    (np.array([[0, 0], [np.nan, 1]]), np.array([0, 1]), "finite"),
    (np.zeros((2, 2)), np.array([0, 2]), "labels must be 0 or 1"),
])
def test_degenerate_fit_sets_are_refused(features, labels, message):
    with pytest.raises(ValueError, match=message):
        RejectionCalibrator.fit(features, labels)


def test_bad_options_are_refused():
    features, labels = overlapping(20)
    with pytest.raises(ValueError, match="target_rejection"):
        RejectionCalibrator.fit(features, labels, target_rejection=0.0)
    with pytest.raises(ValueError, match="prompt must be one of"):
        RejectionCalibrator.fit(features, labels, prompt="visual")
    with pytest.raises(ValueError, match="target must be one of"):
        RejectionCalibrator.fit(features, labels, target="maybe")


def test_json_round_trip(tmp_path):
    features, labels = overlapping(50)
    calibrator = RejectionCalibrator.fit(features, labels, target_rejection=0.9, model="nano", model_sha256="ab" * 32,
                                         prompt="category", target="correct", summary={"data": {"split": "val"}})
    path = calibrator.save(tmp_path / "sub" / "calib.json")
    data = json.loads(path.read_text())
    assert data["format"] == "gleekit.rejection" and data["version"] == 1 and data["features"] == list(FEATURES)
    loaded = RejectionCalibrator.load(path)
    assert loaded.probabilities(features) == pytest.approx(calibrator.probabilities(features))
    assert (loaded.threshold, loaded.threshold_rule, loaded.model, loaded.model_sha256, loaded.prompt, loaded.target) == (
        calibrator.threshold, "target_rejection=0.9", "nano", "ab" * 32, "category", "correct")
    assert loaded.fit_summary["data"] == {"split": "val"} and loaded.fit_summary["negatives"] == 50
    loaded.check_model("ab" * 32)
    loaded.check_model("")  # unknown hash: no check
    with pytest.raises(ValueError, match="fit for nano"):
        loaded.check_model("cd" * 32)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("weights"), "field 'weights' is missing"),
    (lambda d: d.update(weights=[1.0]), "field 'weights' must be a list of 2 finite numbers"),
    (lambda d: d.update(bias="high"), "field 'bias' must be int or float"),
    (lambda d: d.update(bias=float("nan")), "field 'bias' must be finite"),
    (lambda d: d.update(version=2), "field 'version' must be 1, got 2 \\(written by a newer gleekit\\)"),
    (lambda d: d.update(format="other"), "field 'format' must be 'gleekit.rejection'"),
    (lambda d: d.update(features=["score"]), "field 'features' must be"),
    (lambda d: d.update(scale=[1.0, 0.0]), "field 'scale' must be positive"),
    (lambda d: d.update(threshold=1.5), "field 'threshold' must be a probability"),
    (lambda d: d.update(prompt="visual"), "field 'prompt' must be one of"),
    (lambda d: d.update(target=None), "field 'target' must be str"),
    (lambda d: d.update(model_sha256=3), "field 'model_sha256' must be str"),
    (lambda d: d.update(fit=[1]), "field 'fit' must be an object"),
])
def test_malformed_files_name_the_file_and_the_field(tmp_path, change, message):
    features, labels = overlapping(20)
    data = RejectionCalibrator.fit(features, labels).to_dict()
    change(data)
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationFileError, match=message) as error:
        RejectionCalibrator.load(path)
    assert str(path) in str(error.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        RejectionCalibrator.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationFileError, match="bad.json is not a JSON file"):
        RejectionCalibrator.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(CalibrationFileError, match="list.json: must hold a JSON object"):
        RejectionCalibrator.load(tmp_path / "list.json")
