"""Tracking metrics through trackeval, on hand-made cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from eval.tracking_metrics import GroundTruthFrame, tracking_scores
from glee_core.structures import Detections, Tracks

BOXES = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)


def truth(frames: int) -> list[GroundTruthFrame]:
    return [GroundTruthFrame(ids=np.array([1, 2]), boxes=BOXES) for _ in range(frames)]


def predicted(ids_per_frame) -> Tracks:
    return Tracks([Detections(boxes=BOXES, scores=[0.9, 0.9], labels=[0, 0], label_names=["shape"],
                              image_size=(100, 100), track_ids=ids) for ids in ids_per_frame])


def test_perfect_tracking_scores_one():
    scores = tracking_scores([(truth(4), predicted([[5, 9]] * 4))])
    assert (scores.hota, scores.idf1, scores.mota, scores.id_switches) == (pytest.approx(1.0), 1.0, 1.0, 0)
    assert (scores.num_gt_tracks, scores.num_pred_tracks, scores.num_frames) == (2, 2, 4)


def test_one_identity_switch():
    # Object 2 changes id at frame 2: 1 switch; IDF1 = 2*IDTP/(GT+PRED dets) = 2*6/(8+8); MOTA = 1 - 1/8.
    scores = tracking_scores([(truth(4), predicted([[5, 9], [5, 9], [5, 7], [5, 7]]))])
    assert scores.id_switches == 1
    assert scores.idf1 == pytest.approx(12 / 16) and scores.mota == pytest.approx(7 / 8)
    assert scores.det_a == pytest.approx(1.0) and scores.ass_a < 1.0 and scores.hota < 1.0


def test_missed_frames_and_empty_predictions():
    tracks = Tracks([Detections.empty((100, 100), ["shape"]) for _ in range(3)])
    scores = tracking_scores([(truth(3), tracks)])
    assert scores.hota == 0.0 and scores.idf1 == 0.0 and scores.mota == 0.0
    with pytest.raises(ValueError, match="3 ground-truth frames for tracks of 2 frames"):
        tracking_scores([(truth(3), predicted([[1, 2]] * 2))])
