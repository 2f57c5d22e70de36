"""OnlineTracker on hand-made detection streams: stable ids, patience, new ids, bounded state."""
from __future__ import annotations

import numpy as np
import pytest

from glee_core.online_tracking import OnlineTracker
from glee_core.structures import Detections

EMBEDS = np.eye(4, dtype=np.float32)  # four clearly different appearances


def frame(objects: list[tuple[int, float]]) -> Detections:
    """Detections of (appearance index, x position) pairs: 20x20 boxes at (x, 50)."""
    boxes = np.array([[x, 50, x + 20, 70] for _, x in objects], np.float32).reshape(-1, 4)
    embeds = np.array([EMBEDS[k] for k, _ in objects], np.float32).reshape(-1, 4)
    return Detections(boxes=boxes, scores=np.full(len(objects), 0.9), labels=np.zeros(len(objects)),
                      label_names=["shape"], image_size=(200, 300), query_embeds=embeds)


def test_ids_follow_appearance_through_a_crossing():
    tracker = OnlineTracker()
    # Objects 0 and 1 swap places over five frames (they cross); the detection order also flips.
    ids = []
    for t in range(5):
        a, b = 20 + 40 * t, 180 - 40 * t
        objects = [(0, a), (1, b)] if t % 2 == 0 else [(1, b), (0, a)]
        out = tracker.update(frame(objects))
        ids.append({k: int(i) for (k, _), i in zip(objects, out.track_ids)})
    assert all(f == {0: 1, 1: 2} for f in ids), ids


def test_short_gap_keeps_the_id_long_gap_gets_a_new_one():
    tracker = OnlineTracker(patience=2)
    assert tracker.update(frame([(0, 50)])).track_ids.tolist() == [1]
    tracker.update(frame([]))
    tracker.update(frame([]))
    assert tracker.update(frame([(0, 52)])).track_ids.tolist() == [1]  # gone 2 frames: same track
    for _ in range(3):
        tracker.update(frame([]))
    assert tracker.finished == [1] and tracker.tracks == []
    assert tracker.update(frame([(0, 54)])).track_ids.tolist() == [2]  # gone 3 > patience: new id


def test_new_object_mid_video_gets_a_new_id_and_ids_are_never_reused():
    tracker = OnlineTracker(patience=0)
    assert tracker.update(frame([(0, 10)])).track_ids.tolist() == [1]
    assert tracker.update(frame([(0, 12), (2, 200)])).track_ids.tolist() == [1, 2]
    assert tracker.update(frame([(2, 202)])).track_ids.tolist() == [2]
    assert tracker.finished == [1]
    assert tracker.update(frame([(0, 14)])).track_ids.tolist() == [3]


def test_state_stays_bounded_over_a_long_video():
    tracker = OnlineTracker(patience=3)
    rng = np.random.default_rng(0)
    for t in range(500):  # every frame: two new objects at random places, unlike anything before
        objects = [(int(k), float(x)) for k, x in zip(rng.integers(0, 4, 2), rng.uniform(0, 280, 2))]
        tracker.update(frame(objects))
        assert len(tracker.tracks) <= 2 * (3 + 1)
    assert tracker.next_id > 2


def test_without_embeddings_boxes_alone_associate():
    tracker = OnlineTracker()
    plain = frame([(0, 50), (1, 150)])
    plain.query_embeds = None
    first = tracker.update(plain)
    moved = Detections(boxes=plain.boxes[::-1] + 3, scores=plain.scores, labels=plain.labels,
                       label_names=["shape"], image_size=(200, 300))
    assert tracker.update(moved).track_ids.tolist() == first.track_ids[::-1].tolist()


def test_motion_finds_an_object_where_its_velocity_took_it_after_a_miss():
    """Boxes alone (no embeddings): 20 px wide, 10 px per frame, missed in frame 3; where it reappears (40 px from
    its last box: IoU 0) only the velocity-predicted box overlaps."""
    def plain(x):
        out = frame([(0, x)]) if x is not None else frame([])
        out.query_embeds = None
        return out

    positions = [0, 10, 20, None, 40]
    for motion, last_id in ((True, 1), (False, 2)):
        tracker = OnlineTracker(motion=motion)
        ids = [tracker.update(plain(x)).track_ids.tolist() for x in positions]
        assert ids == [[1], [1], [1], [], [last_id]], (motion, ids)
    tracker = OnlineTracker()
    for x in positions[:3]:
        tracker.update(plain(x))
    np.testing.assert_allclose(tracker.tracks[0].velocity, [10, 0, 10, 0])  # moving average of equal steps


def test_weak_detections_only_continue_tracks():
    """With a score threshold, a detection below it continues a live track (second round, after the confident
    ones), never starts one, and is dropped when nothing takes it."""
    tracker = OnlineTracker()

    def scored(objects, scores):
        out = frame(objects)
        out.scores = np.asarray(scores, np.float32)
        return out

    assert tracker.update(scored([(0, 50)], [0.9]), score_threshold=0.5).track_ids.tolist() == [1]
    out = tracker.update(scored([(2, 200), (0, 52)], [0.3, 0.3]), score_threshold=0.5)
    assert out.track_ids.tolist() == [1] and out.boxes[0, 0] == 52  # the weak stranger at x=200 is dropped
    assert tracker.update(scored([(0, 54)], [0.9]), score_threshold=0.5).track_ids.tolist() == [1]
    # a confident detection wins its track before weak ones are considered
    out = tracker.update(scored([(0, 56), (0, 57)], [0.2, 0.8]), score_threshold=0.5)
    assert out.track_ids.tolist() == [1] and out.scores.tolist() == [pytest.approx(0.8)]
    assert tracker.next_id == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"patience": -1}, "patience must be >= 0"),
    ({"embed_weight": 1.5}, "embed_weight must be in"),
    ({"momentum": 1.0}, "momentum, velocity_momentum in"),
    ({"velocity_momentum": -0.1}, "momentum, velocity_momentum in"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnlineTracker(**kwargs)
