"""Multi-object tracking metrics — HOTA (DetA, AssA), CLEAR (MOTA, ID switches) and Identity (IDF1) — computed
by ``trackeval`` (the reference implementation of HOTA) from per-frame ground truth and ``Tracks``.

Matching is class-agnostic: a prediction and a ground-truth object are similar by mask IoU (box IoU when
either side has no masks); CLEAR and Identity count a match at similarity >= 0.5, HOTA averages over its
own thresholds 0.05..0.95.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from glee_core.mask_ops import box_iou, mask_iou
from glee_core.structures import Detections, Tracks


@dataclass
class GroundTruthFrame:
    """One frame's true objects: ``ids`` [N] int, ``boxes`` [N, 4] xyxy pixels, optional ``masks`` [N, H, W]."""

    ids: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray | None = None


@dataclass
class TrackingScores:
    hota: float
    det_a: float
    ass_a: float
    idf1: float
    mota: float
    id_switches: int
    num_frames: int
    num_gt_tracks: int
    num_pred_tracks: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The benchmark metrics by their usual names (HOTA, DetA, AssA, IDF1, MOTA, IDSW)."""
        return {"HOTA": self.hota, "DetA": self.det_a, "AssA": self.ass_a, "IDF1": self.idf1, "MOTA": self.mota,
                "IDSW": float(self.id_switches)}

    def rows(self, order: tuple[str, ...] = ("HOTA", "MOTA", "IDF1", "IDSW", "DetA", "AssA")) -> list[tuple]:
        """Result-table rows of :meth:`metrics` in ``order`` (IDSW as an integer)."""
        metrics = self.metrics()
        return [(key, int(metrics[key]) if key == "IDSW" else metrics[key]) for key in order]

    def table(self) -> str:
        return (f"HOTA {self.hota:.3f} (DetA {self.det_a:.3f}, AssA {self.ass_a:.3f})  IDF1 {self.idf1:.3f}  "
                f"MOTA {self.mota:.3f}  ID switches {self.id_switches}  "
                f"({self.num_frames} frames, {self.num_gt_tracks} true tracks, {self.num_pred_tracks} predicted)")


def _similarity(truth: GroundTruthFrame, pred: Detections) -> np.ndarray:
    if not len(truth.ids) or not len(pred):
        return np.zeros((len(truth.ids), len(pred)))
    if truth.masks is not None and pred.masks is not None:
        return mask_iou(truth.masks, pred.masks)
    return box_iou(truth.boxes, pred.boxes)


def _dense(ids: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Relabel ids to 0..n-1 (trackeval indexes arrays by id)."""
    unique = np.unique(np.concatenate([np.asarray(i, np.int64) for i in ids])) if ids else np.zeros(0, np.int64)
    return [np.searchsorted(unique, np.asarray(i, np.int64)) for i in ids], len(unique)


def sequence_data(truth: Sequence[GroundTruthFrame], tracks: Tracks) -> dict:
    """trackeval's per-sequence input for one video."""
    if len(truth) != len(tracks):
        raise ValueError(f"{len(truth)} ground-truth frames for tracks of {len(tracks)} frames")
    gt_ids, num_gt = _dense([t.ids for t in truth])
    pred_ids, num_pred = _dense([f.track_ids if len(f) else np.zeros(0, np.int64) for f in tracks.frames])
    return {
        "num_timesteps": len(truth), "num_gt_ids": num_gt, "num_tracker_ids": num_pred,
        "num_gt_dets": int(sum(len(t.ids) for t in truth)), "num_tracker_dets": int(sum(len(f) for f in tracks.frames)),
        "gt_ids": gt_ids, "tracker_ids": pred_ids,
        "similarity_scores": [_similarity(t, f) for t, f in zip(truth, tracks.frames)],
    }


def tracking_scores(videos: Sequence[tuple[Sequence[GroundTruthFrame], Tracks]]) -> TrackingScores:
    """HOTA / IDF1 / MOTA over several videos (trackeval's combination across sequences)."""
    return scores_from_sequences([sequence_data(truth, tracks) for truth, tracks in videos])


def scores_from_sequences(sequences: Sequence[dict]) -> TrackingScores:
    """HOTA / IDF1 / MOTA from :func:`sequence_data` of each video (small, picklable: what processes gather)."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    if not sequences:
        raise ValueError("no videos to score")
    metrics = {"HOTA": HOTA({"PRINT_CONFIG": False}), "CLEAR": CLEAR({"PRINT_CONFIG": False}),
               "Identity": Identity({"PRINT_CONFIG": False})}
    data = {f"video{i}": sequence for i, sequence in enumerate(sequences)}
    combined = {}
    for name, metric in metrics.items():
        per_video = {key: metric.eval_sequence(value) for key, value in data.items()}
        combined[name] = metric.combine_sequences(per_video)
    return TrackingScores(
        hota=float(np.mean(combined["HOTA"]["HOTA"])), det_a=float(np.mean(combined["HOTA"]["DetA"])),
        ass_a=float(np.mean(combined["HOTA"]["AssA"])), idf1=float(combined["Identity"]["IDF1"]),
        mota=float(combined["CLEAR"]["MOTA"]), id_switches=int(combined["CLEAR"]["IDSW"]),
        num_frames=sum(d["num_timesteps"] for d in data.values()),
        num_gt_tracks=sum(d["num_gt_ids"] for d in data.values()),
        num_pred_tracks=sum(d["num_tracker_ids"] for d in data.values()),
    )
