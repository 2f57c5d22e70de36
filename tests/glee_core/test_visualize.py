"""Overlays change exactly the pixels they should."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glee_core.image_io import load_image
from glee_core.structures import Detections
from glee_core.visualize import color_for, draw_detections, save_overlay

H, W = 40, 60


def scene() -> tuple[np.ndarray, Detections]:
    image = np.full((H, W, 3), 100, np.uint8)
    masks = np.zeros((2, H, W), bool)
    masks[0, 20:30, 10:20] = True
    masks[1, 5:15, 40:55] = True
    det = Detections(
        boxes=[[10, 20, 20, 30], [40, 5, 55, 15]],
        scores=[0.9, 0.4],
        labels=[0, 1],
        label_names=["circle", "star"],
        image_size=(H, W),
        masks=masks,
    )
    return image, det


def test_masks_blend_only_inside():
    image, det = scene()
    out = draw_detections(image, det, show_boxes=False, show_labels=False, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(image, 100)
    outside = ~det.masks.any(axis=0)
    np.testing.assert_array_equal(out[outside], image[outside])
    for mask, label in zip(det.masks, det.labels):
        expected = np.round(0.5 * 100 + 0.5 * np.asarray(color_for(int(label)), np.float32))
        np.testing.assert_array_equal(out[mask], np.broadcast_to(expected, (mask.sum(), 3)))
    assert color_for(0) != color_for(1)


def test_boxes_and_labels():
    image, det = scene()
    out = draw_detections(image, det, show_masks=False, show_labels=False, line_width=1)
    color = np.asarray(color_for(0))
    np.testing.assert_array_equal(out[20, 10:20], np.broadcast_to(color, (10, 3)))  # top edge
    np.testing.assert_array_equal(out[20:30, 19], np.broadcast_to(color, (10, 3)))  # right edge (x2 - 1)
    np.testing.assert_array_equal(out[21:29, 11:19], image[21:29, 11:19])  # interior untouched
    np.testing.assert_array_equal(out[:, 25:35], image[:, 25:35])
    labelled = draw_detections(image, det, show_masks=False, show_boxes=False)
    assert (labelled[10:20, 10:40] != image[10:20, 10:40]).any()  # caption above the first box
    np.testing.assert_array_equal(labelled[25:, 25:], image[25:, 25:])


def test_track_colours_and_empty():
    image, det = scene()
    det.track_ids = np.array([7, 8])
    out = draw_detections(image, det, show_boxes=False, show_labels=False, alpha=1.0)
    assert tuple(out[25, 15]) == color_for(7)
    empty = Detections.empty((H, W), ["a"])
    np.testing.assert_array_equal(draw_detections(image, empty), image)


def test_errors_and_save(tmp_path: Path):
    image, det = scene()
    with pytest.raises(ValueError, match=r"image is 40x50 \(HxW\) but detections are for 40x60"):
        draw_detections(image[:, :50], det)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        draw_detections(image, det, alpha=2.0)
    path = save_overlay(tmp_path / "overlay.png", image, det, show_labels=False)
    np.testing.assert_array_equal(load_image(path), draw_detections(image, det, show_labels=False))
