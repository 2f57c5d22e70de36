"""The bundled nano model, recomputed from the shipped weights on fresh held-out scenes (a test-split seed never
used in training), meets the figures its model card states."""
from __future__ import annotations

import pytest

from eval.shapeworld import evaluate_shapeworld
from glee_core.predictor import GleePredictor

HELD_OUT_SEED = 2026
NUM_SCENES = 150


@pytest.fixture(scope="module")
def scores():
    return evaluate_shapeworld(GleePredictor.from_pretrained("nano"), num_scenes=NUM_SCENES, seed=HELD_OUT_SEED,
                               progress=False)


def test_category_detection(scores):
    assert scores.box_ap50 >= BOX_AP50, scores.table()
    assert scores.mask_ap50 >= MASK_AP50, scores.table()


def test_referring(scores):
    assert scores.refer_acc50 >= REFER_ACC50, scores.table()


def test_visual_prompts(scores):
    assert scores.visual_box_acc >= VISUAL_ACC, scores.table()
    assert scores.visual_point_acc >= VISUAL_ACC, scores.table()
