"""GleePredictor.batch_groups and predict_expressions on the nano model: every (image, expression) pair in
batched forwards gives what one-by-one ``predict(image, Expression(e))`` calls give, for images of
different sizes too (batches only join images of the same padded input size, because padding changes
results)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glee_core import predictor as predictor_module
from glee_core.predictor import GleePredictor, input_size
from glee_core.structures import Categories, Expression, VisualPrompt
from train.data.shapeworld import generate_scene, scene_seed

TOLERANCE = 1e-4
EXPRESSIONS = ["the circle", "the red square", "the star on the left"]


@pytest.fixture(scope="module")
def predictor() -> GleePredictor:
    return GleePredictor.from_pretrained("nano")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """256x256, 200x160 (another padded input size) and 250x250 (resized to 256x256: same input as the first)."""
    scenes = [generate_scene(scene_seed("test", i), split="test").image for i in (3, 4, 5)]
    return [scenes[0], np.ascontiguousarray(scenes[1][:200, :160]), np.ascontiguousarray(scenes[2][3:253, 3:253])]


def assert_same(batched, single) -> None:
    assert batched.label_names == single.label_names and batched.image_size == single.image_size
    np.testing.assert_allclose(batched.boxes, single.boxes, atol=TOLERANCE)
    np.testing.assert_allclose(batched.scores, single.scores, atol=TOLERANCE)
    np.testing.assert_array_equal(batched.labels, single.labels)
    assert batched.masks.shape == single.masks.shape
    if batched.masks.size:  # (a score threshold may leave none)
        assert (batched.masks != single.masks).mean() < 1e-3  # pixels at a logit of ~0 may flip


def test_input_size_follows_the_resize_and_padding(predictor, images):
    spec = predictor.spec
    assert [input_size(im.shape[:2], spec) for im in images] == [(256, 256), (320, 256), (256, 256)]
    assert input_size((100, 1000), spec) == (64, 384)  # long side capped at max_size=384, then rounded up to 32


def test_batch_groups_join_only_same_input_sizes_in_order(predictor, images, monkeypatch):
    assert predictor.batch_groups(images) == [[0, 2], [1]]
    monkeypatch.setattr(predictor_module, "MAX_BATCH_IMAGES", 2)
    assert predictor.batch_groups(images * 2) == [[0, 2], [3, 5], [1, 4]]


def test_padding_would_change_results(predictor, images):
    """Why batches are grouped: the 256x256 input padded to the 200x160 image's 320x256 gives other detections."""
    prompt = Categories(["circle", "square"])
    padded = predictor.predict(images[:2], prompt)[0]
    alone = predictor.predict(images[0], prompt)
    assert np.abs(padded.scores - alone.scores).max() > 100 * TOLERANCE


def backbone_batch_sizes(predictor, monkeypatch) -> list[int]:
    """Records the batch size of every backbone call of ``predictor``'s model."""
    sizes, forward = [], predictor.model.backbone.forward
    monkeypatch.setattr(predictor.model.backbone, "forward", lambda x: sizes.append(len(x)) or forward(x))
    return sizes


@pytest.mark.parametrize("prompt", [Categories(["circle", "square"]), Expression("the red square")])
def test_predict_each_equals_one_image_calls(predictor, images, monkeypatch, prompt):
    calls = []
    backbone_calls = backbone_batch_sizes(predictor, monkeypatch)
    each = predictor.predict_each(images, prompt, on_batch=calls.append)
    assert calls == [0, 1] and backbone_calls == [2, 1]  # the two 256x256 inputs together, the 320x256 one alone
    monkeypatch.undo()
    for image, found in zip(images, each):
        assert_same(found, predictor.predict(image, prompt))


def test_predict_expressions_equals_one_by_one_calls(predictor, images, monkeypatch):
    calls = []
    backbone_calls = backbone_batch_sizes(predictor, monkeypatch)
    results = predictor.predict_expressions(images, [Expression(e) for e in EXPRESSIONS[:2]] + [EXPRESSIONS[2]],
                                            on_batch=calls.append)
    assert calls == [0, 1]  # 6 pairs of the 256x256 inputs in one forward, 3 of the 200x160 image in another
    assert backbone_calls == [2, 1]  # the backbone sees each image once, not once per expression
    monkeypatch.undo()
    assert len(results) == 3 and all(len(row) == 3 for row in results)
    for image, row in zip(images, results):
        for text, batched in zip(EXPRESSIONS, row):
            assert batched.label_names == [text]  # each result named by its own expression
            assert_same(batched, predictor.predict(image, Expression(text)))


def test_predict_expressions_chunks_and_thresholds(predictor, images, monkeypatch):
    monkeypatch.setattr(predictor_module, "MAX_BATCH_IMAGES", 2)
    calls = []
    results = predictor.predict_expressions([images[0]], EXPRESSIONS, score_threshold=0.3, on_batch=calls.append)
    assert calls == [0, 1]  # 3 pairs in chunks of 2
    for text, batched in zip(EXPRESSIONS, results[0]):
        assert_same(batched, predictor.predict(images[0], Expression(text), score_threshold=0.3))


def test_predict_expressions_refuses_empty_inputs(predictor, images):
    with pytest.raises(ValueError, match="at least one image and one expression, got 1 and 0"):
        predictor.predict_expressions(images[:1], [])
    with pytest.raises(ValueError, match="non-empty string"):
        predictor.predict_expressions(images[:1], [" "])


def test_visual_prompts_share_one_backbone_pass(predictor, images, monkeypatch):
    """Several visual prompts on one image: one backbone pass over the image (plus the one over each prompt's
    256x256 template crop); the results equal those of the model running its backbone for every prompt."""
    prompt = VisualPrompt(boxes=[[20, 30, 90, 100], [120, 40, 200, 150]], points=[[60, 60]])
    backbone_calls = backbone_batch_sizes(predictor, monkeypatch)
    torch.manual_seed(0)  # prompt points are drawn from the global RNG (as the official code does)
    shared = predictor.predict(images[0], prompt)
    assert backbone_calls == [1] * 4  # the image once + 3 template crops
    monkeypatch.setattr(predictor, "_encode", lambda images: None)  # the model's forward then runs the backbone
    torch.manual_seed(0)
    per_prompt = predictor.predict(images[0], prompt)
    assert len(backbone_calls) == 4 + 6  # the image 3 times + 3 crops
    assert shared.label_names == ["prompt 0", "prompt 1", "prompt 2"]
    assert_same(shared, per_prompt)
