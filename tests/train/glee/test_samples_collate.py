"""Training samples and their collation into model inputs and loss targets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from glee_core.processing import InputSpec
from train.data.readers import read_coco
from train.glee.collate import collate
from train.glee.samples import (
    CocoSource,
    ShapeworldSource,
    TrainSample,
    pick_categories,
    restrict_categories,
    visual_sample,
)

SPEC = InputSpec(min_size=64, max_size=96)


def _sample(labels, names=("a", "b", "c"), size=(40, 60)):
    n = len(labels)
    masks = np.zeros((n, *size), dtype=bool)
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        masks[i, 5 + i:15 + i, 10:30] = True
        boxes[i] = [10, 5 + i, 30, 15 + i]
    return TrainSample(image=np.zeros((*size, 3), np.uint8), task="detection", names=list(names),
                       labels=np.array(labels, dtype=np.int64), boxes=boxes, masks=masks)


def test_restrict_categories_remaps_and_drops():
    out = restrict_categories([_sample([0, 2, 1]), _sample([2])], np.array([2, 0]))
    assert out[0].names == ["c", "a"]
    assert out[0].labels.tolist() == [1, 0] and out[0].boxes[:, 1].tolist() == [5, 6]
    assert out[0].masks.shape == (2, 40, 60)
    assert out[1].labels.tolist() == [0]


def test_pick_categories_keeps_a_present_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        chosen = pick_categories(rng, 8, np.array([5]), full_prob=0.0)
        assert 5 in chosen and len(set(chosen.tolist())) == len(chosen)
    assert sorted(pick_categories(rng, 8, np.array([]), full_prob=1.0).tolist()) == list(range(8))


def test_collate_scales_boxes_and_masks():
    batch = collate([_sample([0, 1]), _sample([2])], SPEC)
    # 40x60 -> short side 64: 64x96, padded to 64x96 (multiples of 32)
    assert batch.images.shape == (2, 3, 64, 96)
    scale = 64 / 40
    expected = torch.tensor([20 * scale, 10 * scale, 20 * scale, 10 * scale]) / torch.tensor([96, 64, 96, 64])
    torch.testing.assert_close(batch.targets[0].boxes[0], expected)
    assert batch.targets[0].masks.shape == (2, 64, 96)
    assert batch.targets[0].masks[0].sum() == pytest.approx(10 * 20 * scale * scale, rel=0.1)
    assert batch.model_kwargs() == {"categories": ["a", "b", "c"]}


def test_collate_rejects_mixed_groups():
    visual = visual_sample(np.random.default_rng(0), np.zeros((40, 60, 3), np.uint8), np.array([10, 5, 30, 15.0]),
                           _sample([0]).masks[0], ("box",))
    with pytest.raises(ValueError, match="one task/prompt type"):
        collate([_sample([0]), visual], SPEC)
    with pytest.raises(ValueError, match="same category list"):
        collate([_sample([0]), _sample([0], names=("x", "y", "z"))], SPEC)


def test_visual_prompts_become_prompt_masks():
    rng = np.random.default_rng(1)
    mask = _sample([0]).masks[0]
    box = visual_sample(rng, np.zeros((40, 60, 3), np.uint8), np.array([10, 5, 30, 15.0]), mask, ("box",))
    point = visual_sample(rng, np.zeros((40, 60, 3), np.uint8), np.array([10, 5, 30, 15.0]), mask, ("point",))
    assert mask[int(point.prompt[1]), int(point.prompt[0])]
    batch = collate([box], SPEC)
    assert batch.prompt_masks.shape == (1, 64, 96) and batch.prompt_masks[0, 8:24, 16:48].all()
    assert batch.model_kwargs()["visual_prompt_type"] == "box"
    assert collate([point], SPEC).prompt_masks.sum() > 0


def test_shapeworld_source_is_deterministic_and_mixes_tasks():
    source = ShapeworldSource(task_weights={"detection": 1.0, "referring": 1.0, "visual": 1.0})
    a, b = source.sample(7), source.sample(7)
    assert np.array_equal(a.image, b.image) and a.names == b.names and np.array_equal(a.boxes, b.boxes)
    tasks = {source.sample(i).task for i in range(30)}
    assert tasks == {"detection", "referring", "visual"}
    with pytest.raises(ValueError, match="task weights"):
        ShapeworldSource(task_weights={"segmentation": 1.0})


def test_shapeworld_negative_referring_samples_match_nothing():
    """A share of referring samples get an expression the scene's objects do not match, and no target; the
    positives and the other tasks are the samples that the same index gives without negatives."""
    from train.data.shapeworld import evaluate, generate_scene, negative_expressions, scene_seed

    plain = ShapeworldSource(task_weights={"referring": 1.0})
    mixed = ShapeworldSource(task_weights={"referring": 1.0}, negative_referring=0.5)
    samples = [mixed.sample(i) for i in range(40)]
    negative = [i for i, s in enumerate(samples) if len(s.labels) == 0]
    assert 10 <= len(negative) <= 30
    for i in negative:
        sample = samples[i]
        assert sample.task == "referring" and sample.boxes.shape == (0, 4)
        assert sample.masks.shape == (0, *sample.image.shape[:2])
        scene = generate_scene(scene_seed("train", i, 0), split="train")
        texts = {n.text.lower(): n for n in negative_expressions(scene, np.random.default_rng(0), count=100_000)}  # all
        assert sample.names[0] in texts
        found = evaluate(texts[sample.names[0]].form, scene)
        assert found.matches == () and found.borderline == ()  # no match, not even borderline
    assert all(len(plain.sample(i).labels) == 1 for i in range(10))
    with pytest.raises(ValueError, match="negative_referring must be a share in"):
        ShapeworldSource(negative_referring=1.5)


def test_shapeworld_video_frames_are_detection_samples_of_a_video_frame():
    """A video_frames share of detection samples is a frame of the split's video of the same seed (objects cut by a
    border or mostly hidden included, all shapes prompted); the other samples are exactly those without it."""
    from train.data.shapeworld import CATEGORY_NAMES, scene_seed
    from train.data.shapeworld.video import generate_video

    plain = ShapeworldSource(task_weights={"detection": 1.0})
    mixed = ShapeworldSource(task_weights={"detection": 1.0}, video_frames=0.5)
    frames, small = 0, 0
    for i in range(30):
        sample, scene_sample = mixed.sample(i), plain.sample(i)
        assert sample.task == "detection" and sample.names == list(CATEGORY_NAMES)
        if np.array_equal(sample.image, scene_sample.image):
            assert np.array_equal(sample.boxes, scene_sample.boxes) and np.array_equal(sample.masks, scene_sample.masks)
            continue
        frames += 1
        video = generate_video(scene_seed("train", i, 0), split="train")
        frame = next(f for f in video.frames if np.array_equal(f.image, sample.image))
        assert np.array_equal(sample.masks, np.array([o.mask for o in frame.objects]).reshape(-1, 256, 256))
        assert [CATEGORY_NAMES[label] for label in sample.labels] == [o.shape for o in frame.objects]
        assert np.allclose(sample.boxes, [o.box for o in frame.objects])
        small += int((sample.masks.sum(axis=(1, 2)) < 60).sum())  # below any scene's min_visible_pixels
    assert 8 <= frames <= 22 and small > 0
    with pytest.raises(ValueError, match="video_frames must be a share in"):
        ShapeworldSource(video_frames=-0.1)


def test_coco_source_reads_and_flips(tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "1.png")
    coco = {"images": [{"id": 1, "file_name": "1.png", "width": 30, "height": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0,
                             "area": 50, "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]}],
            "categories": [{"id": 7, "name": "widget"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    source = CocoSource(read_coco(tmp_path / "c.json", tmp_path))
    boxes = {tuple(source.sample(i).boxes[0].tolist()) for i in range(12)}
    assert boxes == {(2.0, 3.0, 12.0, 8.0), (18.0, 3.0, 28.0, 8.0)}
    assert source.sample(0).names == ["widget"] and source.sample(0).masks.shape == (1, 20, 30)


def test_coco_source_reads_an_image_without_objects(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "1.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "2.png")
    coco = {"images": [{"id": 1, "file_name": "1.png", "width": 30, "height": 20},
                       {"id": 2, "file_name": "2.png", "width": 30, "height": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0,
                             "area": 50, "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]}],
            "categories": [{"id": 7, "name": "widget"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    source = CocoSource(read_coco(tmp_path / "c.json", tmp_path))
    for index in (1, 3, 5, 7, 9, 11):  # image 2, a negative image, flipped or not
        empty = source.sample(index)
        assert empty.labels.shape == (0,) and empty.boxes.shape == (0, 4) and empty.masks.shape == (0, 20, 30)
        batch = collate([source.sample(0), empty], SPEC)
        assert len(batch.targets[1]) == 0 and batch.targets[1].masks.shape[0] == 0
