"""The typed core on a held-out shapeworld scene with the nano model: values, handles, limits, errors."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from agents.core import TOOL_SPECS, GleeToolkit
from agents.errors import BadArgument, InternalError, NotFound, Timeout, TooLarge
from agents.settings import Limits
from glee_core.mask_ops import mask_iou
from tests.agents.conftest import data_url, png_bytes


def decode(rle) -> np.ndarray:
    return coco_mask.decode({"size": rle.size, "counts": rle.counts.encode("ascii")}).astype(bool)


def test_segment_returns_pixel_boxes_rle_masks_and_handles(toolkit, scene):
    result = toolkit.segment(image="scene.png", categories=["circle", "square"], min_score=0.0, max_objects=5)
    assert result.tool == "segment" and (result.width, result.height) == (256, 256)
    assert result.image.startswith("img_") and len(result.objects) == 5 and result.num_found > 5
    direct = toolkit.predictor.predict(scene.image, __import__("gleekit").Categories(["circle", "square"]))
    for obj, i in zip(result.objects, range(5)):  # same order and values as the predictor, boxes clipped
        np.testing.assert_allclose(obj.box, np.clip(direct.boxes[i], 0, 256), atol=0.06)
        assert obj.score == pytest.approx(float(direct.scores[i]), abs=1e-4)
        mask = decode(obj.mask)
        np.testing.assert_array_equal(mask, direct.masks[i])
        assert obj.area == int(mask.sum()) and obj.label in ("circle", "square") and obj.id.startswith("obj_")
        record = toolkit.object(obj.id)
        assert record.image == result.image and record.box == tuple(obj.box)
    assert result.summary.startswith(f"5 objects in {result.image} (256x256) (the best 5 of {result.num_found} shown)")
    # The image handle works in a later call, with the same result.
    again = toolkit.segment(image=result.image, categories=["circle", "square"], min_score=0.0, max_objects=5)
    assert [o.box for o in again.objects] == [o.box for o in result.objects] and again.image == result.image


def test_detect_has_no_masks_and_box_areas(toolkit, scene):
    result = toolkit.detect(image=data_url(scene.image), categories=["circle"], min_score=0.0, max_objects=3)
    assert all(o.mask is None for o in result.objects)
    for o in result.objects:
        assert o.area == round((o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))


def test_nothing_found_says_so(toolkit, scene):
    result = toolkit.detect(image=data_url(scene.image), categories=["circle"], min_score=1.0)
    assert result.objects == [] and result.summary.startswith("No 'circle' with score >= 1.00 in img_")


def test_refer_and_visual_prompt_find_the_pointed_object(toolkit, scene):
    target = scene.objects[0]
    x, y = __import__("glee_core.mask_ops", fromlist=["interior_point"]).interior_point(target.mask)
    result = toolkit.visual_prompt(image="scene.png", points=[{"x": x, "y": y}], overlay=True)
    assert [o.label for o in result.objects] == ["point 0"]
    direct = toolkit.predictor.predict(scene.image, __import__("gleekit").VisualPrompt(points=[[x, y]]))
    np.testing.assert_array_equal(decode(result.objects[0].mask), direct.masks[0])
    png = toolkit.overlay(result.overlay)
    with Image.open(io.BytesIO(png)) as overlay:
        assert overlay.size == (256, 256)
    refer = toolkit.refer(image=result.image, expression="the circle")
    assert len(refer.objects) == 1 and refer.objects[0].label == "the circle" and refer.objects[0].mask is not None
    none = toolkit.refer(image=result.image, expression="the circle", min_score=1.0)
    assert none.objects == [] and "No object matches 'the circle' with score >= 1.00 (best 0." in none.summary


def test_box_prompt_with_a_background_point(toolkit, scene):
    target = scene.objects[4]
    result = toolkit.visual_prompt(image="scene.png", boxes=[dict(zip(("x1", "y1", "x2", "y2"), target.box.tolist()))],
                                   points=[{"x": 3, "y": 3, "positive": False}])
    assert [o.label for o in result.objects] == ["box 0"]
    mask = decode(result.objects[0].mask)
    assert mask_iou(mask[None], target.mask[None])[0, 0] >= 0.8 and not mask[3, 3]  # measured 0.96


def test_track_through_frames_and_folder(toolkit, tmp_path):
    from train.data.shapeworld.scene import scene_seed
    from train.data.shapeworld.video import generate_video

    video = generate_video(scene_seed("test", 0), split="test")
    frames = [data_url(f.image) for f in video.frames[:3]]
    result = toolkit.track(frames=frames, expression="the circle", min_score=0.0)
    assert result.num_frames == 3 and [len(f) for f in result.frames] == [1, 1, 1]
    assert all(o.track_id is not None and o.mask is not None and o.id is None for f in result.frames for o in f)
    assert {t.track_id for t in result.tracks} == {o.track_id for f in result.frames for o in f}
    assert result.summary.startswith(f"{len(result.tracks)} track")


def test_track_reads_a_frame_folder_under_the_roots(scene, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i:03d}.png").write_bytes(png_bytes(scene.image))
    (folder / "notes.txt").write_text("not a frame")
    toolkit = GleeToolkit(allowed_roots=[tmp_path], limits=Limits(max_video_frames=2))
    result = toolkit.track(video="clip", categories=["circle"], min_score=0.0, max_objects=2)
    assert result.num_frames == 2 and all(len(f) <= 2 for f in result.frames)
    # Identical frames: every object keeps its id.
    assert [o.track_id for o in result.frames[0]] == [o.track_id for o in result.frames[1]]
    (folder / "002.png").write_bytes(png_bytes(scene.image))
    with pytest.raises(TooLarge, match="has 3 frames; at most 2"):
        toolkit.track(video="clip", categories=["circle"])
    height, width = scene.image.shape[:2]
    small = GleeToolkit(toolkit.predictor, allowed_roots=[tmp_path], limits=Limits(max_video_pixels=2 * height * width))
    with pytest.raises(TooLarge, match=rf"the first 3 frames hold {3 * height * width} pixels, over max_video_pixels"):
        small.track(video="clip", categories=["circle"])


@pytest.mark.parametrize("tool, arguments, error, message", [
    ("detect", {"image": "scene.png", "categories": []}, BadArgument, "categories: List should have at least 1"),
    ("detect", {"image": "scene.png", "categories": ["a", "A"]}, BadArgument, "duplicate"),
    ("detect", {"image": "scene.png", "categories": ["a"], "min_score": 2}, BadArgument, "min_score"),
    ("detect", {"image": "scene.png", "categories": ["a"], "colour": 1}, BadArgument, "colour: Extra inputs"),
    ("detect", {"image": "img_999", "categories": ["a"]}, NotFound, "unknown or expired handle 'img_999'"),
    ("detect", {"image": "obj_1", "categories": ["a"]}, BadArgument, "is an object handle"),
    ("detect", {"image": "missing.png", "categories": ["a"]}, NotFound, "no file 'missing.png'"),
    ("detect", {"image": "scene.png", "categories": ["x" * 501]}, TooLarge, "at most 500"),
    ("visual_prompt", {"image": "scene.png", "points": [{"x": 999, "y": 3}]}, BadArgument, "lies outside"),
    ("visual_prompt", {"image": "scene.png", "points": [{"x": 9, "y": 3, "positive": False}]}, BadArgument,
     "at least one box or one positive point"),
    ("visual_prompt", {"image": "scene.png", "boxes": [{"x1": 9, "y1": 3, "x2": 5, "y2": 9}]}, BadArgument,
     "x2 > x1"),
    ("track", {"frames": ["scene.png"], "video": "v", "categories": ["a"]}, BadArgument, "exactly one of 'frames'"),
    ("track", {"frames": ["scene.png"]}, BadArgument, "exactly one of 'categories', 'expression' and 'object'"),
    ("nope", {}, BadArgument, "unknown tool 'nope'"),
])
def test_bad_calls_are_typed_errors(toolkit, tool, arguments, error, message):
    outcome = toolkit.call(tool, arguments)
    assert not outcome.ok and isinstance(outcome.error, error)
    assert message in outcome.text and outcome.text.startswith(error.code + ": ")
    assert outcome.structured() == {"error": {"type": error.code, "message": outcome.error.message}}


def test_call_accepts_json_text_and_refuses_bad_json(toolkit):
    assert toolkit.call("detect", '{"image": "scene.png", "categories": ["circle"]}').ok
    outcome = toolkit.call("detect", '{"image": ')
    assert outcome.error.code == "bad_argument" and "not valid JSON" in outcome.text
    assert toolkit.call("detect", "[1, 2]").text == "bad_argument: the arguments must be a JSON object, got list"


def test_limits_are_enforced(image_root, scene):
    small = GleeToolkit(allowed_roots=[image_root], limits=Limits(max_categories=2, max_image_pixels=100 * 100,
                                                                    max_objects=2))
    assert small.call("detect", {"image": "scene.png", "categories": list("abc")}).text == \
        "too_large: 3 categories in one call; at most 2"
    big = small.call("detect", {"image": data_url(scene.image), "categories": ["a"]})
    assert big.error.code == "too_large" and "more than max_pixels=10000" in big.text
    small.limits = Limits(max_objects=2)
    small.images.limits = small.limits
    capped = small.detect(image=data_url(scene.image), categories=["circle"], min_score=0.0, max_objects=50)
    assert len(capped.objects) == 2 and capped.num_found > 2
    few_handles = GleeToolkit(small.predictor, limits=Limits(max_handles=40))
    grouped = {"images": [data_url(scene.image)] * 2, "categories": ["circle"], "max_objects": 19}
    assert few_handles.call("detect", grouped).ok  # 2 x (1 image + 19 objects) = 40 handles
    refused = few_handles.call("detect", {**grouped, "overlay": True})
    assert refused.text == ("too_large: this call can make 42 handles (images, objects, overlays) but a session "
                            "keeps 40: lower max_objects, or send fewer images or expressions")


class SlowPredictor:
    calls = 0

    def predict(self, *args, **kwargs):
        SlowPredictor.calls += 1
        time.sleep(1.0)
        raise AssertionError("never returned")


class BrokenPredictor:
    def predict(self, *args, **kwargs):
        raise RuntimeError("secret internal detail /home/user/.ssh")


def test_timeout_and_internal_errors_never_leak(scene):
    slow = GleeToolkit(SlowPredictor(), limits=Limits(timeout_s=0.2))
    outcome = slow.call("detect", {"image": data_url(scene.image), "categories": ["a"]})
    assert outcome.error.code == "timeout" and "longer than 0.2 s" in outcome.text
    broken = GleeToolkit(BrokenPredictor())
    outcome = broken.call("detect", {"image": data_url(scene.image), "categories": ["a"]})
    assert isinstance(outcome.error, InternalError) and "secret" not in outcome.text and "Traceback" not in outcome.text
    with pytest.raises(Timeout):
        slow.detect(image=data_url(scene.image), categories=["a"])
    time.sleep(1.1)  # the running call ends; the timed-out calls queued behind it never start
    SlowPredictor.calls = 0
    for _ in range(3):
        assert slow.call("detect", {"image": data_url(scene.image), "categories": ["a"]}).error.code == "timeout"
    time.sleep(1.1)
    assert SlowPredictor.calls == 1


def test_specs_cover_every_operation():
    assert sorted(TOOL_SPECS) == ["compare", "crop", "detect", "refer", "refine", "segment", "select", "track", "visual_prompt"]
    assert "ask" not in TOOL_SPECS  # needs the mllm; absent, not faked
