"""Objects found earlier as arguments (issue 11, part A): refine, crop, compare, track from a handle and describe,
through the Python API, on a held-out shapeworld scene with the nano model and on hand-made records."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.core import TOOL_SPECS, GleeToolkit
from agents.errors import NotFound
from agents.results import ObjectRecord, compare_records, crop_window, relation_of
from agents.schemas import MaskRLE
from glee_core.mask_ops import decode_rle, encode_rle, interior_point, mask_iou
from glee_core.structures import VisualPrompt
from tests.agents.conftest import data_url

CIRCLE, BLOB = 2, 4
"""Scene objects the nano model segments well from a point (mask IoU 0.98 and 0.96 with the truth)."""


def mask_of(info) -> np.ndarray:
    return decode_rle(info.mask.model_dump())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(mask_iou(a[None], b[None])[0, 0])


def point_on(scene, k: int) -> dict:
    x, y = interior_point(scene.objects[k].mask)
    return {"x": x, "y": y}


@pytest.fixture(scope="module")
def found(toolkit, scene):
    """The circle (scene object 2), segmented from a point: its ObjectInfo and image handle."""
    result = toolkit.visual_prompt(image="scene.png", points=[point_on(scene, CIRCLE)])
    return result.objects[0], result.image


def record(image: str, box: tuple[int, int, int, int], size=(64, 64), label="thing", with_mask=True) -> ObjectRecord:
    """A hand-made object: its mask fills its box exactly."""
    mask = np.zeros(size, bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    rle = encode_rle(mask)
    return ObjectRecord(image, label, 0.9, tuple(map(float, box)),
                        MaskRLE(size=rle["size"], counts=rle["counts"]) if with_mask else None)


@pytest.fixture
def blank(toolkit):
    """A fresh 64x64 image handle and a function adding hand-made objects of it."""
    handle, _ = toolkit.images.image(np.zeros((64, 64, 3), np.uint8))

    def add(box, **kwargs) -> str:
        return toolkit.handles.add("obj", record(handle, box, **kwargs))
    return handle, add


# ---------------------------------------------------------------------------------------------------- refine
def test_refine_resegments_from_the_box_under_a_new_handle(toolkit, scene, found):
    obj, image = found
    torch.manual_seed(0)  # box and mask prompts draw at most 100 of their pixels at random (as the official code)
    result = toolkit.refine(object=obj.id)
    assert result.tool == "refine" and result.image == image and len(result.objects) == 1
    refined = result.objects[0]
    assert refined.id != obj.id and refined.label == f"refined {obj.id}"
    torch.manual_seed(0)
    direct = toolkit.predictor.predict(scene.image, VisualPrompt(boxes=[obj.box]))
    np.testing.assert_array_equal(mask_of(refined), direct.masks[0])  # the same as a box prompt
    assert refined.score == pytest.approx(float(direct.scores[0]), abs=1e-4)
    assert iou(mask_of(refined), mask_of(obj)) >= 0.9  # measured 0.99
    assert iou(mask_of(refined), scene.objects[CIRCLE].mask) >= 0.9  # measured 0.98
    assert toolkit.object(refined.id).image == image and result.summary.startswith(f"1 object in {image}")


def test_refine_positive_points_add_parts_and_negative_points_exclude(toolkit, scene, found):
    obj, _ = found
    point = point_on(scene, BLOB)
    result = toolkit.refine(object=obj.id, points=[point, {"x": 3, "y": 3, "positive": False}])
    mask = mask_of(result.objects[0])
    truth = scene.objects[CIRCLE].mask | scene.objects[BLOB].mask
    assert iou(mask, truth) >= 0.85 and mask[int(point["y"]), int(point["x"])] and not mask[3, 3]
    box = result.objects[0].box  # the union of the two parts' boxes
    assert box[0] < 15 and box[3] > 235 and box[2] >= obj.box[2] - 1


def test_refine_errors(toolkit, blank):
    image, add = blank
    outcome = toolkit.call("refine", {"object": "obj_77777"})
    assert outcome.error.code == "not_found" and "unknown or expired handle 'obj_77777'" in outcome.text
    assert toolkit.call("refine", {"object": image}).text == \
        f"bad_argument: {image!r} is an image handle; an object handle (obj_N) is needed here"
    orphan = toolkit.handles.add("obj", record("img_99999", (1, 1, 9, 9)))
    with pytest.raises(NotFound, match=rf"the image of '{orphan}' \(img_99999\) has expired; pass the image again"):
        toolkit.refine(object=orphan)
    outcome = toolkit.call("refine", {"object": add((1, 1, 9, 9)), "points": [{"x": 100, "y": 5}]})
    assert outcome.error.code == "bad_argument" and "lies outside" in outcome.text


# ---------------------------------------------------------------------------------------------------- crop
def test_crop_registers_the_padded_box_as_a_new_image(toolkit, scene, found, monkeypatch):
    obj, image = found
    crop = toolkit.crop(object=obj.id, padding=5)
    x1, y1 = int(np.floor(obj.box[0] - 5)), int(np.floor(obj.box[1] - 5))
    x2, y2 = int(np.ceil(obj.box[2] + 5)), int(np.ceil(obj.box[3] + 5))
    assert (crop.source, crop.object, crop.offset, crop.width, crop.height) == (image, obj.id, [x1, y1], x2 - x1,
                                                                                 y2 - y1)
    pixels = toolkit.handles.get(crop.image, "img")
    np.testing.assert_array_equal(pixels, scene.image[y1:y2, x1:x2])
    assert f"add [{x1}, {y1}] to get {image} pixels" in crop.summary
    # Later calls take the crop handle; their coordinates are crop pixels.
    point = point_on(scene, CIRCLE)
    seen = []
    predict = toolkit.predictor.predict
    monkeypatch.setattr(toolkit.predictor, "predict", lambda im, prompt, **kw: seen.append((im, prompt)) or
                        predict(im, prompt, **kw))
    inner = toolkit.visual_prompt(image=crop.image, points=[{"x": point["x"] - x1, "y": point["y"] - y1}])
    assert inner.image == crop.image and (inner.width, inner.height) == (crop.width, crop.height)
    (pixels_seen, prompt_seen), = seen  # the model saw the crop and the point in crop pixels
    np.testing.assert_array_equal(pixels_seen, scene.image[y1:y2, x1:x2])
    np.testing.assert_allclose(prompt_seen.points, [[point["x"] - x1, point["y"] - y1]])
    placed = np.zeros(scene.image.shape[:2], bool)
    placed[y1:y2, x1:x2] = mask_of(inner.objects[0])
    # the object fills the crop, unlike anything nano was trained on: it returns part of it (stage 5: all of the
    # 1,192 mask pixels inside the object, though not the pointed part)
    assert placed.any() and (placed & scene.objects[CIRCLE].mask).sum() >= 0.9 * placed.sum()
    assert toolkit.segment(image=crop.image, categories=["circle"], min_score=0.0).image == crop.image


def test_crop_is_clipped_to_the_image(toolkit, blank):
    image, add = blank
    crop = toolkit.crop(object=add((2, 50, 10, 64)))  # default padding 8
    assert (crop.offset, crop.width, crop.height) == ([0, 42], 18, 22)
    assert toolkit.handles.get(crop.image, "img").shape == (22, 18, 3)
    outcome = toolkit.call("crop", {"object": add((2, 2, 9, 9)), "padding": -1})
    assert outcome.error.code == "bad_argument" and outcome.text.startswith("bad_argument: padding: Input should be")


def test_crop_window_edges():
    assert crop_window((0, 0, 5, 5), 8, (64, 64)) == (0, 0, 13, 13)
    assert crop_window((10.4, 20.6, 30.2, 40.5), 0, (64, 64)) == (10, 20, 31, 41)
    assert crop_window((64, 10, 64, 20), 0, (64, 64)) == (63, 10, 64, 20)  # an empty box still gives one column


# ---------------------------------------------------------------------------------------------------- compare
def test_compare_measures_hand_made_objects(toolkit, blank):
    image, add = blank
    a, b = add((10, 10, 30, 20), label="a"), add((20, 10, 40, 20), label="b")
    result = toolkit.compare(first=a, second=b)
    assert (result.image, result.first, result.second, result.iou_of) == (image, a, b, "masks")
    assert result.iou == pytest.approx(1 / 3, abs=1e-4) and result.box_iou == pytest.approx(1 / 3, abs=1e-4)
    assert (result.first_area, result.second_area, result.area_ratio) == (200, 200, 1.0)
    assert (result.dx, result.dy, result.relation) == (-10.0, 0.0, "overlapping")
    assert result.summary == (f"{a} 'a' overlaps {b} 'b' in {image} (64x64): mask IoU 0.33, box IoU 0.33; areas 200 "
                              "and 200 pixels (ratio 1.00); centre offset dx -10.0, dy 0.0 pixels.")


@pytest.mark.parametrize("first, second, relation, dx, dy", [
    ((12, 12, 18, 18), (10, 10, 30, 30), "inside", -5.0, -5.0),
    ((10, 10, 30, 30), (12, 12, 18, 18), "contains", 5.0, 5.0),
    ((0, 40, 10, 50), (30, 35, 50, 60), "left of", -35.0, -2.5),
    ((30, 35, 50, 60), (0, 40, 10, 50), "right of", 35.0, 2.5),
    ((30, 0, 40, 10), (30, 35, 50, 60), "above", -5.0, -42.5),
    ((30, 35, 50, 60), (30, 0, 40, 10), "below", 5.0, 42.5),
    ((10, 10, 30, 30), (10, 10, 30, 30), "overlapping", 0.0, 0.0),
])
def test_compare_relations(toolkit, blank, first, second, relation, dx, dy):
    _, add = blank
    result = toolkit.compare(first=add(first), second=add(second))
    assert (result.relation, result.dx, result.dy) == (relation, dx, dy)


def test_compare_without_masks_uses_boxes(toolkit, blank):
    image, add = blank
    small, big = add((12, 12, 18, 18), with_mask=False), add((10, 10, 30, 30))
    result = toolkit.compare(first=small, second=big)
    assert result.iou_of == "boxes" and result.iou == result.box_iou == pytest.approx(36 / 400)
    assert (result.first_area, result.second_area, result.area_ratio, result.relation) == (36, 400, 0.09, "inside")
    assert "box IoU 0.09;" in result.summary


def test_compare_records_and_relation_directly():
    zero = ObjectRecord("img_1", "dot", 0.5, (5.0, 5.0, 5.0, 5.0), None)  # a zero-area box
    other = record("img_1", (20, 20, 30, 30), with_mask=False)
    comparison = compare_records(other, zero)
    assert comparison.second_area == 0 and comparison.area_ratio is None and comparison.relation == "right of"
    assert relation_of(0.0, 10, 10, -3.0, 3.0) == "left of"  # ties go to left/right


def test_compare_errors(toolkit, blank, found):
    _, add = blank
    obj, image = found
    here = add((1, 1, 5, 5))
    outcome = toolkit.call("compare", {"first": obj.id, "second": here})
    assert outcome.error.code == "bad_argument" and f"{obj.id!r} is in {image} and {here!r} in img_" in outcome.text
    assert outcome.text.endswith("compare objects of the same image")
    assert toolkit.call("compare", {"first": here, "second": "obj_88888"}).error.code == "not_found"
    assert toolkit.call("compare", {"first": here}).text == "bad_argument: second: Field required"


# ---------------------------------------------------------------------------------------------------- track
@pytest.fixture(scope="module")
def video():
    from train.data.shapeworld.scene import scene_seed
    from train.data.shapeworld.video import generate_video

    return [data_url(frame.image) for frame in generate_video(scene_seed("test", 0), split="test").frames[:3]]


def test_track_an_object_from_its_frame_on(toolkit, video):
    start = toolkit.refer(image=video[1], expression="the circle")
    obj = start.objects[0]
    torch.manual_seed(0)
    result = toolkit.track(frames=[video[0], start.image, video[2]], object=obj.id, min_score=0.0)
    assert result.num_frames == 3 and [len(f) for f in result.frames] == [0, 1, 1]  # frame 0 is not tracked
    assert [(t.track_id, t.label, t.first_frame, t.last_frame) for t in result.tracks] == \
        [(1, f"{obj.id} the circle", 1, 2)]
    assert iou(mask_of(result.frames[1][0]), mask_of(obj)) >= 0.8  # measured 0.95
    # The same as following the mask with the predictor from that frame on.
    frames = [toolkit.images.pixels(ref) for ref in video[1:]]
    torch.manual_seed(0)
    direct = toolkit.predictor.track(frames, VisualPrompt(masks=mask_of(obj)[None]), score_threshold=0.0)
    for ours, theirs in zip(result.frames[1:], direct.frames):
        np.testing.assert_array_equal(mask_of(ours[0]), theirs.masks[0])


def test_track_object_errors(toolkit, video, found):
    obj, image = found
    detected = toolkit.detect(image=image, categories=["circle"], min_score=0.0, max_objects=1).objects[0].id
    cases = [
        ({"frames": [image], "object": detected}, f"{detected!r} has no mask (it came from detect)"),
        ({"frames": video[:2], "object": obj.id}, f"{obj.id!r} was found in {image}, which is not among the frames"),
        ({"frames": [image], "object": obj.id, "mode": "official"}, "runs in online mode only"),
        ({"video": "clip", "object": obj.id}, "needs 'frames' that include the object's image handle"),
        ({"frames": [image], "object": obj.id, "expression": "x"}, "got 'expression' and 'object'"),
        ({"frames": [image], "object": image}, "is an image handle; an object handle (obj_N) is needed"),
    ]
    for arguments, message in cases:
        outcome = toolkit.call("track", arguments)
        assert outcome.error.code == "bad_argument" and message in outcome.text, outcome.text


# ---------------------------------------------------------------------------------------------------- describe
def test_describe_is_published_only_with_a_describer(toolkit, image_root, found):
    obj, image = found
    assert "describe" not in toolkit.specs and "describe" not in TOOL_SPECS
    outcome = toolkit.call("describe", {"object": obj.id})
    assert outcome.error.code == "bad_argument" and "has no describer" in outcome.text
    seen = []

    def describer(pixels, record):
        seen.append((pixels, record))
        return f"  a round {record.label} at x {record.box[0]:.0f}  "
    described = GleeToolkit(toolkit.predictor, allowed_roots=[image_root], describer=describer)
    assert "describe" in described.specs
    segment = described.segment(image="scene.png", categories=["circle"], min_score=0.0, max_objects=1)
    target = segment.objects[0]
    result = described.describe(object=target.id)
    assert (result.object, result.image, result.label) == (target.id, segment.image, "circle")
    assert result.description == f"a round circle at x {target.box[0]:.0f}"
    assert result.summary == f"{target.id} 'circle' in {segment.image}: {result.description}"
    pixels, record = seen[0]
    assert record == described.object(target.id) and not pixels.flags.writeable
    np.testing.assert_array_equal(pixels, described.handles.get(segment.image, "img"))
    assert described.call("describe", {"object": "obj_99999"}).error.code == "not_found"
    described.close()
