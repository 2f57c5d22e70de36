"""shapeworld videos: determinism, stable track ids, entering / leaving, occlusion, frames vs objects."""
from __future__ import annotations

import numpy as np
import pytest

from glee_core.mask_ops import masks_to_boxes
from train.data.shapeworld import COLORS, VideoConfig, generate_video, generate_videos, scene_seed
from train.data.shapeworld.scene import rasterize, texture_shade


@pytest.fixture(scope="module")
def videos():
    return list(generate_videos("train", 12, seed=5))


def test_deterministic_and_split_dependent():
    first, again = generate_video(scene_seed("val", 2)), generate_video(scene_seed("val", 2), split="val")
    assert len(first.frames) == 12
    for a, b in zip(first.frames, again.frames):
        assert np.array_equal(a.image, b.image) and a.track_ids == b.track_ids
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.objects, b.objects))
    other = next(generate_videos("test", 1, start=2))
    assert not np.array_equal(first.frames[0].image, other.frames[0].image)
    with pytest.raises(ValueError, match="enter_prob"):
        VideoConfig(enter_prob=0.7, leave_prob=0.6)


def test_track_ids_are_stable(videos):
    for video in videos:
        assert len(video.tracks) == len(video.modes) and 2 <= len(video.tracks) <= 5
        assert len({track.color for track in video.tracks}) == len(video.tracks)
        for frame in video.frames:
            assert frame.track_ids == sorted(set(frame.track_ids)) and len(frame.objects) == len(frame.track_ids)
            for track_id, obj in zip(frame.track_ids, frame.objects):
                track = video.tracks[track_id]
                assert (obj.shape, obj.color, obj.size, obj.texture, obj.radius) == (
                    track.shape, track.color, track.size, track.texture, track.radius
                )


def test_objects_move_smoothly(videos):
    config = VideoConfig()
    limit = config.speed[1] * 256 + 1e-6
    moved = 0
    for video in videos:
        centers = {}
        for t, frame in enumerate(video.frames):
            for track_id, obj in zip(frame.track_ids, frame.objects):
                if track_id in centers and centers[track_id][0] == t - 1:
                    step = np.hypot(*np.subtract(obj.center, centers[track_id][1]))
                    assert step <= limit
                    moved += step > 0.5
                centers[track_id] = (t, obj.center)
    assert moved > 100


def test_objects_enter_leave_and_occlude(videos):
    entered = left = occluded = 0
    for video in videos:
        first, last = set(video.frames[0].track_ids), set(video.frames[-1].track_ids)
        seen = set().union(*(frame.track_ids for frame in video.frames))
        entered += any(video.modes[i] == "enter" for i in seen - first)
        left += any(video.modes[i] == "leave" for i in seen - last)
        occluded += any(
            obj.area < rasterize(obj, 256, 256).sum() for frame in video.frames for obj in frame.objects
        )
        assert not any(video.modes[i] == "enter" for i in first)  # entering tracks start fully outside
        assert not any(video.modes[i] == "leave" for i in last)  # leaving tracks are gone by the end
    assert entered >= 2 and left >= 2 and occluded >= 8  # overlaps happen in most videos


def test_frames_agree_with_objects(videos):
    for video in videos[:6]:
        free = None  # pixels no object covers in any frame: the shared background
        for frame in video.frames:
            if not frame.objects:
                continue
            masks = np.stack([obj.mask for obj in frame.objects])
            assert masks.sum(axis=0).max() <= 1
            assert np.array_equal(np.stack([obj.box for obj in frame.objects]), masks_to_boxes(masks))
            for obj in frame.objects:
                assert obj.area >= VideoConfig().min_visible_pixels
                tones = {COLORS[obj.color]} | ({texture_shade(obj.color)} if obj.texture else set())
                assert {tuple(p) for p in frame.image[obj.mask]} <= tones
            covered = masks.any(axis=0)
            free = ~covered if free is None else free & ~covered
        images = np.stack([frame.image for frame in video.frames])
        assert free.sum() > 1000 and np.all(images[:, free] == images[0, free])
