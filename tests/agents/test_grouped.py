"""Many images and many expressions in one call (issue 11, part B): grouped results equal separate calls,
batched underneath (one predictor call per batch of same-size inputs), limits and argument errors."""
from __future__ import annotations

import numpy as np
import pytest

from agents.core import GleeToolkit
from agents.errors import TooLarge
from agents.schemas import GroupedResult, ImageResult
from agents.settings import Limits
from glee_core.mask_ops import decode_rle
from glee_core.predictor import GleePredictor
from tests.agents.conftest import data_url
from train.data.shapeworld import generate_scene, scene_seed

EXPRESSIONS = ["the circle", "the square"]


class SpyPredictor:
    """The real predictor, recording what the toolkit asks of it."""

    def __init__(self, predictor):
        self.predictor, self.calls = predictor, []

    def predict(self, images, prompt, **kwargs):
        self.calls.append(("predict", len(images) if isinstance(images, list) else None))
        return self.predictor.predict(images, prompt, **kwargs)

    def batch_groups(self, images):
        return self.predictor.batch_groups(images)

    predict_each = GleePredictor.predict_each  # through this spy's predict, once per batch group
    _per_group = GleePredictor._per_group

    def predict_expressions(self, images, expressions, **kwargs):
        self.calls.append(("predict_expressions", len(images), len(expressions)))
        return self.predictor.predict_expressions(images, expressions, **kwargs)


@pytest.fixture(scope="module")
def images(scene):
    """Data URLs of 256x256 (the scene), 200x160 (another network input size) and 250x250 (resized to 256x256)."""
    other = generate_scene(scene_seed("test", 4), split="test").image
    return [data_url(scene.image), data_url(np.ascontiguousarray(other[:200, :160])),
            data_url(np.ascontiguousarray(other[3:253, 3:253]))]


@pytest.fixture(scope="module")
def spy(toolkit, image_root):
    spied = GleeToolkit(SpyPredictor(toolkit.predictor), allowed_roots=[image_root])
    yield spied
    spied.close()


def assert_same_objects(grouped: ImageResult, single: ImageResult) -> None:
    assert (grouped.width, grouped.height, grouped.num_found) == (single.width, single.height, single.num_found)
    assert [o.label for o in grouped.objects] == [o.label for o in single.objects]
    for a, b in zip(grouped.objects, single.objects):
        np.testing.assert_allclose(a.box, b.box, atol=0.11)  # boxes are rounded to 0.1 pixel
        assert a.score == pytest.approx(b.score, abs=2e-4) and a.id != b.id
        if a.mask is not None:
            assert (decode_rle(a.mask.model_dump()) != decode_rle(b.mask.model_dump())).mean() < 1e-3


def test_segment_images_equals_separate_calls_in_two_batches(spy, images):
    spy.predictor.calls.clear()
    result = spy.segment(images=images, categories=["circle", "square"], min_score=0.0, max_objects=4, overlay=True)
    assert isinstance(result, GroupedResult) and result.tool == "segment" and len(result.results) == 3
    assert spy.predictor.calls == [("predict", 2), ("predict", 1)]  # the two 256x256 inputs together
    handles = [r.image for r in result.results]
    assert len(set(handles)) == 3 and all(h.startswith("img_") for h in handles)
    outcome = spy.call("segment", {"images": images[:2], "categories": ["circle"], "overlay": True})
    assert [png[:4] for png in outcome.overlays] == [b"\x89PNG"] * 2 and outcome.overlay_png is None
    for grouped, handle in zip(result.results, handles):
        assert grouped.tool == "segment" and grouped.overlay.startswith("ovl_") and len(grouped.objects) == 4
        assert all(spy.object(o.id).image == handle for o in grouped.objects)  # every object has its handle
        assert_same_objects(grouped, spy.segment(image=handle, categories=["circle", "square"], min_score=0.0,
                                                 max_objects=4))
    lines = result.summary.split("\n")
    assert lines[0] == "3 results (3 images):" and len(lines) == 4
    assert lines[2] == f"[1] {result.results[1].summary}"


def test_detect_with_one_image_keeps_the_plain_result(spy, images):
    spy.predictor.calls.clear()
    result = spy.detect(image=images[1], categories=["circle"], min_score=0.0, max_objects=2)
    assert isinstance(result, ImageResult) and spy.predictor.calls == [("predict", None)]
    grouped = spy.detect(images=[images[1]], categories=["circle"], min_score=0.0, max_objects=2)
    assert isinstance(grouped, GroupedResult) and grouped.summary.startswith("1 result (1 image):")
    assert_same_objects(grouped.results[0], result)


def test_refer_images_and_expressions_in_image_then_expression_order(spy, images):
    spy.predictor.calls.clear()
    result = spy.refer(images=images[:2], expressions=EXPRESSIONS)
    assert spy.predictor.calls == [("predict_expressions", 2, 2)]
    assert [r.objects[0].label for r in result.results] == EXPRESSIONS * 2
    assert result.summary.startswith("4 results (2 images x 2 expressions):")
    for k, grouped in enumerate(result.results):
        image, expression = images[k // 2], EXPRESSIONS[k % 2]
        assert grouped.image == result.results[(k // 2) * 2].image and grouped.tool == "refer"
        assert_same_objects(grouped, spy.refer(image=image, expression=expression))


def test_refer_mixes_one_image_and_many_expressions_and_the_reverse(spy, images):
    several = spy.refer(image=images[0], expressions=EXPRESSIONS, min_score=1.0)
    assert len(several.results) == 2 and all(r.objects == [] for r in several.results)
    assert several.results[1].summary.startswith("No object matches 'the square' with score >= 1.00 (best 0.")
    one = spy.refer(images=images[1:], expression="the circle")
    assert [r.objects[0].label for r in one.results] == ["the circle"] * 2
    assert one.summary.startswith("2 results (2 images):")


def test_limits_on_images_and_expressions(image_root, toolkit, images):
    small = GleeToolkit(toolkit.predictor, allowed_roots=[image_root],
                        limits=Limits(max_batch_images=2, max_prompts=2))
    with pytest.raises(TooLarge, match="^too_large: 3 images in one call; at most 2$"):
        small.segment(images=images, categories=["circle"])
    outcome = small.call("refer", {"image": images[0], "expressions": ["a", "b", "c"]})
    assert outcome.text == "too_large: 3 expressions in one call; at most 2"
    outcome = small.call("refer", {"image": images[0], "expressions": ["a", "b" * 600]})
    assert outcome.text == "too_large: a referring expression has 600 characters; at most 500"
    small.close()


@pytest.mark.parametrize("tool, arguments, message", [
    ("detect", {"categories": ["a"]}, "give exactly one of 'image' and 'images'; got none of them"),
    ("segment", {"image": "scene.png", "images": ["scene.png"], "categories": ["a"]},
     "give exactly one of 'image' and 'images'; got 'image' and 'images'"),
    ("detect", {"images": [], "categories": ["a"]}, "images: List should have at least 1 item"),
    ("detect", {"images": ["scene.png", ""], "categories": ["a"]}, "images.1: String should have at least 1"),
    ("refer", {"image": "scene.png"}, "give exactly one of 'expression' and 'expressions'; got none of them"),
    ("refer", {"image": "scene.png", "expression": "a", "expressions": ["b"]}, "got 'expression' and 'expressions'"),
    ("refer", {"images": ["scene.png", "img_99999"], "expression": "a"}, "unknown or expired handle 'img_99999'"),
    ("refer", {"images": ["scene.png", "obj_1"], "expression": "a"}, "'obj_1' is an object handle"),
    ("refer", {"image": "scene.png", "expressions": ["a", " ..."]}, "has no words left"),
])
def test_bad_grouped_calls(toolkit, tool, arguments, message):
    outcome = toolkit.call(tool, arguments)
    assert not outcome.ok and message in outcome.text, outcome.text
