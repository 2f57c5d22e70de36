"""Detections / Tracks behaviour, COCO / JSON adapters, and prompt validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glee_core.mask_ops import decode_rle
from glee_core.structures import (
    MAX_CATEGORIES,
    Caption,
    Categories,
    Detections,
    Expression,
    Tracks,
    VisualPrompt,
)

H, W = 12, 16


def make_detections(with_extras: bool = True) -> Detections:
    masks = np.zeros((4, H, W), bool)
    masks[0, 1:4, 2:6] = True
    masks[1, 1:5, 2:7] = True
    masks[2, 8:12, 10:16] = True
    masks[3, 0, 0] = True
    return Detections(
        boxes=np.array([[2, 1, 6, 4], [2, 1, 7, 5], [10, 8, 16, 12], [0, 0, 1, 1]], np.float32),
        scores=np.array([0.5, 0.9, 0.7, 0.2], np.float32),
        labels=np.array([0, 0, 1, 2]),
        label_names=["circle", "square", "star"],
        image_size=(H, W),
        masks=masks,
        query_embeds=np.arange(8, dtype=np.float32).reshape(4, 2) / 3 if with_extras else None,
        query_index=np.array([7, 3, 12, 0]) if with_extras else None,
        track_ids=np.array([1, 2, 3, 4]) if with_extras else None,
    )


def assert_same(a: Detections, b: Detections) -> None:
    assert a.image_size == b.image_size and a.label_names == b.label_names
    for name in ("boxes", "scores", "labels", "masks", "query_embeds", "query_index", "track_ids"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            assert left.dtype == right.dtype, name
            np.testing.assert_array_equal(left, right, err_msg=name)


def test_construction_converts_dtypes_and_torch():
    det = Detections(
        boxes=torch.tensor([[0.0, 0.0, 2.0, 3.0]], dtype=torch.bfloat16),
        scores=[1],
        labels=torch.tensor([0.0]),
        label_names=("a",),
        image_size=torch.tensor([4, 5]),
        masks=np.ones((1, 4, 5), np.uint8),
    )
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32 and det.labels.dtype == np.int64
    assert det.masks.dtype == bool and det.image_size == (4, 5) and det.label_names == ["a"]
    assert det.label_texts == ["a"]
    empty = Detections(boxes=[], scores=[], labels=[], label_names=[], image_size=(2, 3), masks=[])
    assert empty.boxes.shape == (0, 4) and empty.masks.shape == (0, 2, 3) and len(empty) == 0


@pytest.mark.parametrize(
    "change, match",
    [
        ({"boxes": np.zeros((3, 5))}, r"boxes must be \[N, 4\], got \(3, 5\)"),
        ({"scores": np.zeros(3)}, r"scores must be \[N\] with N=4, got \(3,\)"),
        ({"labels": np.array([0, 1, 2, 3])}, r"labels must index label_names \(0..2\), got values \[0, 1, 2, 3\]"),
        ({"labels": np.array([0, 1, 2, 1.5])}, "labels must hold integers"),
        (
            {"masks": np.zeros((4, H, W + 1), bool)},
            r"masks must be \[N, H, W\] with N=4, H=12, W=16, got \(4, 12, 17\)",
        ),
        ({"masks": np.full((4, H, W), 0.7)}, "masks must be boolean"),
        ({"query_embeds": np.zeros(4)}, r"query_embeds must be \[N, D\] with N=4, got \(4,\)"),
        ({"track_ids": np.zeros(5)}, r"track_ids must be \[N\] with N=4"),
        ({"scores": np.array([0.5, np.nan, 0.1, 0.2])}, "scores must be finite"),
        ({"boxes": np.array([[2, 1, 1, 4]] * 4)}, r"x2 >= x1 and y2 >= y1, box 0 is \[2.0, 1.0, 1.0, 4.0\]"),
        ({"image_size": (0, 5)}, "image_size must be two positive integers"),
        ({"image_size": 5}, r"image_size must be \(H, W\)"),
        ({"label_names": "circle"}, "label_names must be a list of strings"),
        ({"scores": np.array(["a"] * 4)}, "scores must hold float values"),
    ],
)
def test_detections_validation(change, match):
    names = ("boxes", "scores", "labels", "label_names", "image_size", "masks", "query_embeds", "track_ids")
    fields = {name: getattr(make_detections(), name) for name in names}
    fields.update(change)
    with pytest.raises(ValueError, match=match):
        Detections(**fields)


def test_indexing():
    det = make_detections()
    one = det[1]
    assert len(one) == 1 and one.query_index.tolist() == [3] and one.masks.shape == (1, H, W)
    assert det[-1].track_ids.tolist() == [4]
    assert det[1:3].scores.tolist() == pytest.approx([0.9, 0.7])
    assert det[np.array([True, False, False, True])].labels.tolist() == [0, 2]
    assert det[[3, 0]].query_index.tolist() == [0, 7]
    assert len(det[[]]) == 0 and det[[]].masks.shape == (0, H, W)
    with pytest.raises(IndexError, match="out of range"):
        det[4]
    with pytest.raises(IndexError, match=r"bool index must have shape \(4,\)"):
        det[np.array([True, False])]


def test_filter_sort_topk():
    det = make_detections()
    assert det.filter(min_score=0.5).query_index.tolist() == [7, 3, 12]
    assert det.filter(labels=["circle", 2]).query_index.tolist() == [7, 3, 0]
    assert det.filter(min_score=0.6, labels=[0]).query_index.tolist() == [3]
    with pytest.raises(ValueError, match="unknown label 'dog'"):
        det.filter(labels=["dog"])
    assert det.sort_by_score().scores.tolist() == pytest.approx([0.9, 0.7, 0.5, 0.2])
    assert det.topk(2).query_index.tolist() == [3, 12]
    assert len(det.topk(10)) == 4 and len(det.topk(0)) == 0


def test_nms_agnostic_and_per_class():
    det = make_detections()
    det.labels[:] = [0, 1, 1, 2]
    # box 0 vs box 1: intersection 12, union 12 + 20 - 12 = 20 → IoU 0.6
    assert det.nms(0.5).query_index.tolist() == [3, 12, 0]
    assert det.nms(0.5, class_agnostic=False).query_index.tolist() == [3, 12, 7, 0]
    assert det.nms(0.7).query_index.tolist() == [3, 12, 7, 0]


def test_to_coco_values():
    det = make_detections()
    coco = det.to_coco(image_id=42)
    assert [c["category_id"] for c in coco] == [1, 1, 2, 3]
    assert coco[1]["bbox"] == [2.0, 1.0, 5.0, 4.0]
    assert coco[1]["score"] == pytest.approx(0.9)
    assert coco[1]["area"] == 20.0 and coco[3]["area"] == 1.0
    assert coco[0]["image_id"] == 42
    np.testing.assert_array_equal(decode_rle(coco[2]["segmentation"]), det.masks[2])
    assert isinstance(coco[2]["segmentation"]["counts"], str)
    json.dumps(coco)
    mapped = det.to_coco(7, category_ids={0: 10, 1: 20, 2: 30})
    assert [c["category_id"] for c in mapped] == [10, 10, 20, 30]
    boxes_only = make_detections(with_extras=False)
    boxes_only.masks = None
    no_masks = boxes_only.to_coco(1)
    assert "segmentation" not in no_masks[0] and no_masks[1]["area"] == 20.0
    with pytest.raises(ValueError, match=r"one id per label name \(3\), got 2"):
        det.to_coco(1, category_ids=[1, 2])
    with pytest.raises(ValueError, match="no masks"):
        boxes_only.to_rle()


def test_from_coco_round_trip_and_polygons():
    det = make_detections(with_extras=False)
    back = Detections.from_coco(det.to_coco(3), (H, W), det.label_names)
    assert_same(back, det)
    ann = {"bbox": [1, 2, 4, 4], "category_id": 2, "segmentation": [[1, 2, 5, 2, 5, 6, 1, 6]]}
    poly = Detections.from_coco([ann], (H, W), ["a", "b"])
    assert poly.scores.tolist() == [1.0] and poly.labels.tolist() == [1]
    np.testing.assert_array_equal(poly.boxes, [[1, 2, 5, 6]])
    assert poly.masks[0, 3, 2] and not poly.masks[0, 0, 0]
    uncompressed = {"bbox": [0, 0, 1, 1], "category_id": 1, "segmentation": {"size": [2, 3], "counts": [1, 1, 4]}}
    from_uncompressed = Detections.from_coco([uncompressed], (2, 3), ["a"]).masks[0]
    assert from_uncompressed.tolist() == [[False, False, False], [True, False, False]]
    assert len(Detections.from_coco([], (H, W), ["a"])) == 0
    with pytest.raises(ValueError, match="annotation 1 has no segmentation"):
        Detections.from_coco([ann, {"bbox": [0, 0, 1, 1], "category_id": 1}], (H, W), ["a", "b"])
    with pytest.raises(ValueError, match=r"category_id 9, not one of \[1, 2\]"):
        Detections.from_coco([{**ann, "category_id": 9}], (H, W), ["a", "b"])


def test_json_round_trip_exact():
    det = make_detections()
    data = json.loads(json.dumps(det.to_json_dict()))
    assert_same(Detections.from_json_dict(data), det)
    det.masks = None
    assert_same(Detections.from_json_dict(json.loads(json.dumps(det.to_json_dict()))), det)
    empty = Detections.empty((H, W), ["a"], with_masks=True)
    assert_same(Detections.from_json_dict(empty.to_json_dict()), empty)
    with pytest.raises(ValueError, match="expected a dict with format"):
        Detections.from_json_dict({"boxes": []})


def make_tracks() -> Tracks:
    def frame(ids, scores, labels):
        n = len(ids)
        masks = np.zeros((n, 4, 4), bool)
        masks[:, 0, 0] = True
        return Detections(
            boxes=np.tile([0, 0, 1, 1], (n, 1)), scores=scores, labels=labels, label_names=["a", "b"],
            image_size=(4, 4), masks=masks, track_ids=ids,
        )

    return Tracks([frame([5, 2], [0.8, 0.4], [0, 1]), Detections.empty((4, 4), ["a", "b"]), frame([2], [0.6], [0])])


def test_tracks_summary_and_ytvis():
    tracks = make_tracks()
    assert len(tracks) == 3 and tracks.track_ids.tolist() == [2, 5]
    summary = tracks.track_summary()
    assert [s.track_id for s in summary] == [2, 5]
    assert summary[0].frames == (0, 2) and summary[0].mean_score == pytest.approx(0.5)
    assert summary[0].label == 0 and summary[0].label_name == "a"  # 0.6 (a) beats 0.4 (b)
    assert summary[1].frames == (0,) and summary[1].label_name == "a"
    ytvis = tracks.to_ytvis(video_id=9)
    assert [r["category_id"] for r in ytvis] == [1, 1]
    assert ytvis[0]["segmentations"][1] is None and ytvis[1]["segmentations"][2] is None
    assert decode_rle(ytvis[0]["segmentations"][2])[0, 0]
    again = Tracks.from_json_dict(json.loads(json.dumps(tracks.to_json_dict())))
    for a, b in zip(again.frames, tracks.frames):
        assert_same(a, b)


def test_tracks_validation():
    det = make_detections(with_extras=False)
    with pytest.raises(ValueError, match="frame 0 has 4 detections but no track_ids"):
        Tracks([det])
    det.track_ids = np.array([1, 1, 2, 3])
    with pytest.raises(ValueError, match=r"frame 0 repeats a track id: \[1, 1, 2, 3\]"):
        Tracks([det])
    with pytest.raises(ValueError, match="frame 1 has label_names"):
        Tracks([Detections.empty((2, 2), ["a"]), Detections.empty((2, 2), ["b"])])
    with pytest.raises(ValueError, match="at least one frame"):
        Tracks([])


def test_categories():
    cats = Categories(["  red circle ", "blue star"])
    assert cats.names == ["red circle", "blue star"] and len(cats) == 2
    with pytest.raises(ValueError, match="at least one name"):
        Categories([])
    with pytest.raises(ValueError, match="must be a list of strings, got str"):
        Categories("car")
    with pytest.raises(ValueError, match="category name 1 must be a non-empty string, got '  '"):
        Categories(["car", "  "])
    with pytest.raises(ValueError, match="category name 0 must be a non-empty string, got 3"):
        Categories([3])
    with pytest.raises(ValueError, match="duplicate category name 'Car' \\(same as 'car', ignoring case\\)"):
        Categories(["car", "Car"])
    too_many = f"got {MAX_CATEGORIES + 1} category names, more than max_categories={MAX_CATEGORIES}"
    with pytest.raises(ValueError, match=too_many):
        Categories([f"c{i}" for i in range(MAX_CATEGORIES + 1)])
    assert len(Categories(["a", "b", "c"], max_categories=3)) == 3
    with pytest.raises(ValueError, match="pass a larger max_categories"):
        Categories(["a", "b", "c"], max_categories=2)


def test_expression_normalisation():
    expr = Expression('The Man\'s "left-hand" side/edge: (red)!')
    assert expr.normalized == "the mans left hand side edge red"
    with pytest.raises(ValueError, match="non-empty string"):
        Expression("   ")
    with pytest.raises(ValueError, match="no words left"):
        Expression("?!.")


def test_caption_spans_given_or_found():
    prompt = Caption("a red circle next to a star", [(2, 12), (23, 27)])
    assert prompt.phrases == ["red circle", "star"] and not prompt.context
    found = Caption("a red circle next to two blue squares, and the big star above it.")
    assert found.phrases == ["red circle", "two blue squares", "big star"]
    assert [found.text[a:b] for a, b in found.spans] == found.phrases


@pytest.mark.parametrize("text, spans, message", [
    ("a red circle", [(20, 40)], r"span \(20, 40\) must select non-blank text"),
    ("a red circle", [(3, 12)], "cuts a word"),
    ("a red circle", [(2, 12), (6, 12)], "overlap"),
    ("a red circle", [(2,)], r"a \(start, end\) pair"),
    ("a red circle", [], "at least one span"),
    ("of the and", None, "no phrase found"),
    ("  ", None, "non-empty string"),
])
def test_caption_bad_spans(text, spans, message):
    with pytest.raises(ValueError, match=message):
        Caption(text, spans)


def test_visual_prompt_validation():
    prompt = VisualPrompt(boxes=[[1, 2, 5, 6]], points=[[3, 3], [4, 4]])
    assert prompt.point_labels.tolist() == [1, 1] and prompt.num_prompts == 3
    prompt.validate_against((10, 10))
    with pytest.raises(ValueError, match="at least one box, point, scribble or mask"):
        VisualPrompt()
    with pytest.raises(ValueError, match="at least one"):
        VisualPrompt(boxes=np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"box 0 \[5.0, 2.0, 5.0, 6.0\] must have x2 > x1 and y2 > y1"):
        VisualPrompt(boxes=[[5, 2, 5, 6]])
    with pytest.raises(ValueError, match="boxes must be finite"):
        VisualPrompt(boxes=[[0, 0, np.inf, 3]])
    with pytest.raises(ValueError, match=r"points must be \[P, 2\], got \(1, 3\)"):
        VisualPrompt(points=[[1, 2, 3]])
    with pytest.raises(ValueError, match=r"point_labels must be 0 or 1, got \[2\]"):
        VisualPrompt(points=[[1, 2]], point_labels=[2])
    with pytest.raises(ValueError, match="point_labels were given without points"):
        VisualPrompt(boxes=[[0, 0, 1, 1]], point_labels=[1])
    with pytest.raises(ValueError, match="scribble 0 has no points"):
        VisualPrompt(scribbles=[np.zeros((0, 2))])
    with pytest.raises(ValueError, match=r"prompt masks \[1\] are empty"):
        VisualPrompt(masks=np.stack([np.ones((3, 3), bool), np.zeros((3, 3), bool)]))


def test_visual_prompt_validate_against_image():
    with pytest.raises(ValueError, match=r"box 1 \[0.0, 0.0, 20.0, 5.0\] lies outside the 10x16 \(HxW\) image"):
        VisualPrompt(boxes=[[0, 0, 4, 4], [0, 0, 20, 5]]).validate_against((10, 16))
    with pytest.raises(ValueError, match=r"point 0 \[-1.0, 3.0\] lies outside"):
        VisualPrompt(points=[[-1, 3]]).validate_against((10, 16))
    with pytest.raises(ValueError, match=r"scribble 0 point \[3.0, 11.0\] lies outside"):
        VisualPrompt(scribbles=[[[1, 1], [3, 11]]]).validate_against((10, 16))
    with pytest.raises(ValueError, match=r"prompt masks are 3x3, expected the 10x16"):
        VisualPrompt(masks=np.ones((1, 3, 3), bool)).validate_against((10, 16))
    VisualPrompt(boxes=[[0, 0, 16, 10]], points=[[16, 10]]).validate_against((10, 16))


def test_label_map_takes_the_best_mask_per_pixel():
    masks = np.zeros((3, 4, 5), bool)
    masks[0, :, :3] = True  # label 2, score 0.5: left part
    masks[1, 1:3, 1:4] = True  # label 0, score 0.9: wins where it overlaps mask 0
    masks[2, 3, 4] = True  # label 1, score 0.1
    dets = Detections(boxes=np.zeros((3, 4)), scores=[0.5, 0.9, 0.1], labels=[2, 0, 1],
                      label_names=["sky", "road", "grass"], image_size=(4, 5), masks=masks)
    expected = np.array([[2, 2, 2, -1, -1],
                         [2, 0, 0, 0, -1],
                         [2, 0, 0, 0, -1],
                         [2, 2, 2, -1, 1]])
    np.testing.assert_array_equal(dets.to_label_map(), expected)
    assert dets.to_label_map(background=255)[0, 4] == 255
    with pytest.raises(ValueError, match="needs masks"):
        Detections(boxes=np.zeros((1, 4)), scores=[1.0], labels=[0], label_names=["a"], image_size=(4, 5)).to_label_map()
