"""Online (streaming) multi-object tracking over per-frame ``Detections``, with bounded state.

Each frame's detections are matched to the live tracks by Hungarian assignment on a similarity that
mixes appearance and motion::

    similarity = embed_weight * cosine(query_embed, track_embed) + (1 - embed_weight) * IoU(box, track_box)

A pair is accepted when its similarity reaches ``match_threshold``. Matched tracks update their embedding
as an exponential moving average (``momentum`` keeps the old part) and take the new box; unmatched
detections start new tracks with fresh ids; a track unseen for more than ``patience`` frames is finished
and forgotten (its id is never reused). The state therefore holds only tracks seen in the last
``patience + 1`` frames, however long the video.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from glee_core.mask_ops import box_iou
from glee_core.structures import Detections


@dataclass
class _Track:
    track_id: int
    embed: np.ndarray | None
    box: np.ndarray
    last_frame: int


class OnlineTracker:
    """Assign stable ``track_ids`` to a stream of per-frame ``Detections`` (see the module docstring)."""

    def __init__(self, patience: int = 5, match_threshold: float = 0.3, embed_weight: float = 0.5,
                 momentum: float = 0.7):
        if patience < 0:
            raise ValueError(f"patience must be >= 0 frames, got {patience}")
        if not 0.0 <= embed_weight <= 1.0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"embed_weight must be in [0, 1] and momentum in [0, 1), got {embed_weight}, {momentum}")
        self.patience, self.match_threshold = patience, match_threshold
        self.embed_weight, self.momentum = embed_weight, momentum
        self.frame = -1
        self.next_id = 1
        self.tracks: list[_Track] = []
        self.finished: list[int] = []
        """Ids of tracks finished by the last ``update`` (cleared at each call)."""

    def update(self, detections: Detections) -> Detections:
        """Match one frame's detections to the live tracks; returns them with ``track_ids`` [N] int64."""
        self.frame += 1
        similarity = self._similarity(detections)
        rows, cols = linear_sum_assignment(-similarity) if similarity.size else (np.zeros(0, int), np.zeros(0, int))
        ids = np.zeros(len(detections), np.int64)
        matched = set()
        for det, trk in zip(rows.tolist(), cols.tolist()):
            if similarity[det, trk] >= self.match_threshold:
                self._refresh(self.tracks[trk], detections, det)
                ids[det] = self.tracks[trk].track_id
                matched.add(det)
        for det in range(len(detections)):
            if det not in matched:
                embed = None if detections.query_embeds is None else self._unit(detections.query_embeds[det])
                self.tracks.append(_Track(self.next_id, embed, detections.boxes[det].copy(), self.frame))
                ids[det] = self.next_id
                self.next_id += 1
        alive = [t for t in self.tracks if self.frame - t.last_frame <= self.patience]
        self.finished = [t.track_id for t in self.tracks if self.frame - t.last_frame > self.patience]
        self.tracks = alive
        return replace(detections, track_ids=ids)

    @staticmethod
    def _unit(vector: np.ndarray) -> np.ndarray:
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _similarity(self, detections: Detections) -> np.ndarray:
        """[N, T] similarity of this frame's detections to the live tracks."""
        if not len(detections) or not self.tracks:
            return np.zeros((len(detections), len(self.tracks)))
        iou = box_iou(detections.boxes, np.stack([t.box for t in self.tracks]))
        if detections.query_embeds is None or any(t.embed is None for t in self.tracks):
            return iou
        embeds = detections.query_embeds / np.maximum(np.linalg.norm(detections.query_embeds, axis=1, keepdims=True),
                                                      1e-12)
        cosine = embeds @ np.stack([t.embed for t in self.tracks]).T
        return self.embed_weight * cosine + (1.0 - self.embed_weight) * iou

    def _refresh(self, track: _Track, detections: Detections, det: int) -> None:
        track.box = detections.boxes[det].copy()
        track.last_frame = self.frame
        if track.embed is not None and detections.query_embeds is not None:
            new = self._unit(detections.query_embeds[det])
            track.embed = self._unit(self.momentum * track.embed + (1.0 - self.momentum) * new)
