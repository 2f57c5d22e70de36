"""RLE round trips, mask → box convention, mask and box IoU, and greedy NMS."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask

from glee_core.mask_ops import box_iou, decode_rle, decode_rles, encode_rle, encode_rles, mask_iou, masks_to_boxes
from glee_core.ops import nms

bool_masks = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(lambda hw: arrays(np.bool_, hw))


@settings(max_examples=60, deadline=None)
@given(bool_masks)
def test_rle_round_trip_matches_pycocotools(mask):
    rle = encode_rle(mask)
    assert rle["size"] == list(mask.shape)
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_rle(rle), mask)
    reference = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(reference.astype(bool), mask)


def test_rle_known_value_and_uncompressed_counts():
    mask = np.zeros((3, 4), bool)
    mask[1:3, 1] = True
    rle = encode_rle(mask)
    # column-major runs 4 zeros, 2 ones, 6 zeros; from the third run on COCO stores the difference
    # to the run two back (6 - 4 = 2), and a small value v is the character chr(48 + v)
    assert rle == {"size": [3, 4], "counts": "426"}
    np.testing.assert_array_equal(decode_rle({"size": [3, 4], "counts": [4, 2, 6]}), mask)
    np.testing.assert_array_equal(decode_rle({"size": [3, 4], "counts": rle["counts"].encode()}), mask)


@pytest.mark.parametrize(
    "rle, match",
    [
        ({"size": [5, 4], "counts": "02"}, "cover 2 pixels"),
        ({"size": [5, 4], "counts": ""}, "cover 0 pixels"),
        ({"size": [5, 4], "counts": "0d"}, "ends in the middle"),
        ({"size": [5, 4], "counts": "0d0~"}, "invalid character"),
        ({"size": [5, 4], "counts": [5, -1, 16]}, "negative run"),
        ({"size": [5], "counts": "0d0"}, "size must be"),
        ({"counts": "0d0"}, "'size' and 'counts'"),
    ],
)
def test_decode_rle_rejects_malformed(rle, match):
    with pytest.raises(ValueError, match=match):
        decode_rle(rle)


def test_encode_decode_batches():
    masks = np.zeros((3, 6, 5), bool)
    masks[0, 1:3, 2:4] = True
    masks[2, 5, 4] = True
    rles = encode_rles(masks)
    assert len(rles) == 3 and encode_rles(np.zeros((0, 6, 5), bool)) == []
    np.testing.assert_array_equal(decode_rles(rles, (6, 5)), masks)
    with pytest.raises(ValueError, match=r"RLE 0 has size \[6, 5\], expected \[5, 6\]"):
        decode_rles(rles, (5, 6))
    with pytest.raises(ValueError, match="must be a bool array"):
        encode_rles(masks.astype(np.uint8))
    with pytest.raises(ValueError, match=r"mask must be \[H, W\]"):
        encode_rle(masks)


def test_masks_to_boxes_pixel_edges():
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 2:5, 3:8] = True  # rows 2..4, cols 3..7
    masks[1, 9, 11] = True
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, [[3, 2, 8, 5], [11, 9, 12, 10], [0, 0, 0, 0]])
    coco_xywh = coco_mask.toBbox([{**r, "counts": r["counts"].encode()} for r in encode_rles(masks[:2])])
    np.testing.assert_array_equal(boxes[:2, :2], coco_xywh[:, :2])
    np.testing.assert_array_equal(boxes[:2, 2:] - boxes[:2, :2], coco_xywh[:, 2:])
    assert masks_to_boxes(np.zeros((0, 4, 4), bool)).shape == (0, 4)


def test_mask_iou_values():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2] = True  # 8 px
    b = np.zeros((3, 4, 4), bool)
    b[0, :1] = True  # 4 px inside a[0]
    b[1, 1:3] = True  # 8 px, 4 shared with a[0]
    iou = mask_iou(a, b)
    np.testing.assert_allclose(iou, [[0.5, 4 / 12, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="same"):
        mask_iou(a, np.zeros((1, 3, 4), bool))


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
    b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [2, 2, 2, 2]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 0.0, 0.0], [25 / 175, 25 / 175, 0.0]])
    with pytest.raises(ValueError, match=r"boxes_a must be \[N, 4\], got shape \(3,\)"):
        box_iou(np.zeros(3), b)


def test_nms_hand_built():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: best of cluster A
            [1, 1, 11, 11],  # 1: IoU 81/119 = 0.68 with 0
            [20, 20, 30, 30],  # 2: alone
            [0, 0, 10, 9],  # 3: IoU 0.9 with 0
            [0, 5, 10, 10],  # 4: IoU 0.5 with 0 (not > 0.5), 0.4 with 3
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.3, 0.95, 0.1], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 2, 4])
    np.testing.assert_array_equal(nms(boxes, scores, 0.95), [3, 0, 1, 2, 4])
    labels = np.array([0, 0, 0, 1, 0])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, labels=labels), [3, 0, 2, 4])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]"):
        nms(boxes, scores, 1.5)
    with pytest.raises(ValueError, match=r"scores must be \[N\] with N=5"):
        nms(boxes, scores[:3], 0.5)
