"""The bundled nano model, recomputed from the shipped weights on fresh held-out scenes (a test-split seed never
used in training), meets the figures its model card states.

The issue's targets (box AP50 0.90, mask AP50 0.85, referring 0.90, visual 0.90) are reached for visual prompts
and mask AP50, and for referring with the referring head (0.927); the floors below are the model card's measured
figures less 0.03 (room for numeric differences between platforms), so a regression of the shipped weights or of
the inference path fails here. Raise them with the model."""
from __future__ import annotations

import pytest

from eval.shapeworld import evaluate_shapeworld
from glee_core.predictor import GleePredictor

HELD_OUT_SEED = 2026
NUM_SCENES = 150
# Measured (glee_core/weights/nano/MODEL_CARD.md, stage-15 weights and the referring head): box AP50 0.869, mask
# AP50 0.853, referring Acc@0.5 0.927 (0.567 without the head), visual box 0.947, visual point 0.953.
TOLERANCE = 0.03
BOX_AP50 = 0.869 - TOLERANCE
MASK_AP50 = 0.853 - TOLERANCE
REFER_ACC50 = 0.927 - TOLERANCE
VISUAL_BOX_ACC = 0.947 - TOLERANCE
VISUAL_POINT_ACC = 0.953 - TOLERANCE


@pytest.fixture(scope="module")
def scores():
    return evaluate_shapeworld(GleePredictor.from_pretrained("nano"), num_scenes=NUM_SCENES, seed=HELD_OUT_SEED,
                               progress=False).metrics


def test_category_detection(scores):
    assert scores["box AP50"] >= BOX_AP50, scores
    assert scores["mask AP50"] >= MASK_AP50, scores


def test_referring(scores):
    assert scores["referring Acc@0.5"] >= REFER_ACC50, scores


def test_visual_prompts(scores):
    assert scores["visual prompt (box) acc"] >= VISUAL_BOX_ACC, scores
    assert scores["visual prompt (point) acc"] >= VISUAL_POINT_ACC, scores


def test_no_such_object():
    """``gleekit eval calibrate-refer`` (150 val scenes) then ``gleekit eval rejection`` (the 150 test scenes) on
    nano, as the model card measured them: negatives rejected 0.867, positives accepted 0.936, AUROC 0.964; the
    shares depend on one threshold, so they get a wider margin."""
    from eval.models import load_eval_model
    from eval.rejection import ShapeworldRejectionBenchmark, fit_calibrator
    from eval.runner import collect_records

    model = load_eval_model("nano")
    fit_set = ShapeworldRejectionBenchmark(NUM_SCENES, split="val")
    calibrator = fit_calibrator([s for r in collect_records(fit_set, model, progress=False) for s in r], model=model)
    held_out = ShapeworldRejectionBenchmark(NUM_SCENES, split="test", seed=HELD_OUT_SEED, calibrator=calibrator)
    metrics = held_out.score(collect_records(held_out, model, progress=False)).metrics
    assert metrics["AUROC (present vs absent)"] >= 0.964 - TOLERANCE, metrics
    assert metrics["negatives rejected"] >= 0.867 - 0.05, metrics
    assert metrics["positives accepted"] >= 0.936 - 0.05, metrics
