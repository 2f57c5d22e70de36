"""The bundled shapeworld-tiny GLEE-LLM on 6 held-out scenes: floors from the measured figures.

Measured on these scenes (generated answers, masks from the pointed object token, the model's setting): 4 of the
12 single-target answers hit their target (IoU 0.98, 0.99, 0.97, 0.99; 4 reasoning, 8 referring questions: which
kind a scene's draw gives depends on the model's proposals), two-mask answers with exactly 2 [SEG] 6/6, region
captions 5/6. On 40 scenes (model card): reasoning gIoU 0.518, cIoU 0.413, referring 0.412 / 0.300, two-mask
1.000, captions 0.70. The floors catch a broken pipeline or a regression of the bundled weights; they are below
issue 8's targets, which this model does not reach.
"""
from __future__ import annotations

import pytest

from eval.mllm_shapeworld import evaluate_mllm_shapeworld
from mllm.io import load_gleellm


@pytest.fixture(scope="module")
def scores():
    return evaluate_mllm_shapeworld(load_gleellm("shapeworld-tiny"), num_scenes=6, per_kind=1, progress=False)


def test_some_single_target_masks_hit_their_targets(scores):
    ious = scores.reasoning.ious + scores.referring.ious
    assert len(ious) == 12 and len(scores.reasoning) >= 2
    assert sum(iou >= 0.5 for iou in ious) >= 3


def test_two_mask_answers_have_two_seg(scores):
    assert scores.two_mask_total == 6 and scores.two_mask_accuracy >= 5 / 6


def test_region_captions_name_colour_and_shape(scores):
    assert scores.caption_total == 6 and scores.caption_correct >= 4
