"""refer with a calibrated "no such object": the probability is reported and low ones reject the object."""
from __future__ import annotations

import numpy as np
import pytest

from agents.core import GleeToolkit
from glee_core.checkpoint import weights_sha256
from glee_core.modeling.glee import bundled_model_dir
from glee_core.rejection import RejectionCalibrator, prediction_features


def _calibrator(threshold: float, prompt: str = "referring") -> RejectionCalibrator:
    """p = sigmoid(top_logit): the calibrated probability equals the best score."""
    return RejectionCalibrator(weights=np.array([1.0, 0.0]), bias=0.0, mean=np.zeros(2), scale=np.ones(2),
                               threshold=threshold, prompt=prompt)


@pytest.fixture(scope="module")
def plain(toolkit, image_root):
    return toolkit.refer(image=str(image_root / "scene.png"), expression="the red circle")


def test_an_accepted_match_keeps_its_object_and_reports_the_probability(toolkit, image_root, plain):
    calibrated = GleeToolkit(toolkit.predictor, allowed_roots=[image_root], rejection=_calibrator(0.0))
    try:
        result = calibrated.refer(image=str(image_root / "scene.png"), expression="the red circle")
    finally:
        calibrated.close()
    assert plain.match_probability is None and len(plain.objects) == 1
    assert len(result.objects) == 1 and result.objects[0].box == plain.objects[0].box
    assert result.match_probability == pytest.approx(plain.objects[0].score, abs=1e-3)
    assert f"Calibrated match probability {result.match_probability:.2f}" in result.summary


def test_below_the_threshold_no_object_is_returned(toolkit, image_root, plain, tmp_path):
    path = _calibrator(0.999).save(tmp_path / "calibration.json")
    calibrated = GleeToolkit(toolkit.predictor, allowed_roots=[image_root], rejection=path)
    try:
        outcome = calibrated.call("refer", {"image": str(image_root / "scene.png"), "expression": "the red circle"})
    finally:
        calibrated.close()
    assert outcome.ok and outcome.result.objects == [] and outcome.result.num_found == 0
    assert outcome.result.match_probability == pytest.approx(plain.objects[0].score, abs=1e-3)
    assert "below the threshold 1.00" in outcome.text and "No object matches 'the red circle'" in outcome.text


def test_a_category_calibration_is_refused_for_refer(toolkit):
    with pytest.raises(ValueError, match="fit for referring expressions"):
        GleeToolkit(toolkit.predictor, rejection=_calibrator(0.5, prompt="category"))


def test_a_calibration_for_other_weights_is_refused_when_the_model_is_loaded_by_name():
    other = _calibrator(0.5)
    other.model, other.model_sha256 = "lite", "ab" * 32
    with pytest.raises(ValueError, match=r"fit for lite \(weights sha256 abababababab…\), not for weights"):
        GleeToolkit(model="nano", rejection=other)
    other.model_sha256 = weights_sha256([bundled_model_dir("nano")])
    GleeToolkit(model="nano", rejection=other).close()


def test_features_of_a_referring_prediction():
    class Scores:
        scores, labels = np.array([0.8]), np.array([0])
    np.testing.assert_allclose(prediction_features(Scores()), [np.log(4.0), 0.8])
