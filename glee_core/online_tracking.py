"""Online (streaming) multi-object tracking over per-frame ``Detections``, with bounded state.

Each frame's detections are matched to the live tracks by Hungarian assignment on a similarity that
mixes appearance and motion::

    similarity = embed_weight * cosine(query_embed, track_embed) + (1 - embed_weight) * IoU(box, predicted_box)

where a track's predicted box is its last box moved by its velocity (an exponential moving average of its
per-frame box displacement, ``velocity_momentum`` keeps the old part) times the frames since it was last seen;
``motion=False`` predicts the last box. A pair is accepted when its similarity reaches ``match_threshold``.

Association runs in two rounds (as ByteTrack): detections scoring at least ``score_threshold`` (given to
:meth:`OnlineTracker.update`) are matched first; the tracks left over may then continue with a weaker detection
(scoring below it), which never starts a track and is dropped when unmatched. Without ``score_threshold`` every
detection is confident.

Matched tracks update their embedding as an exponential moving average (``momentum`` keeps the old part) and take
the new box; unmatched confident detections start new tracks with fresh ids; a track unseen for more than
``patience`` frames is finished and forgotten (its id is never reused). The state therefore holds only tracks
seen in the last ``patience + 1`` frames, however long the video.
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
    velocity: np.ndarray | None = None
    """[4] xyxy pixels per frame; None until the track has been seen twice."""


class OnlineTracker:
    """Assign stable ``track_ids`` to a stream of per-frame ``Detections`` (see the module docstring)."""

    def __init__(self, patience: int = 5, match_threshold: float = 0.3, embed_weight: float = 0.5,
                 momentum: float = 0.7, motion: bool = True, velocity_momentum: float = 0.5):
        if patience < 0:
            raise ValueError(f"patience must be >= 0 frames, got {patience}")
        if not 0.0 <= embed_weight <= 1.0 or not 0.0 <= momentum < 1.0 or not 0.0 <= velocity_momentum < 1.0:
            raise ValueError(f"embed_weight must be in [0, 1] and momentum, velocity_momentum in [0, 1), got "
                             f"{embed_weight}, {momentum}, {velocity_momentum}")
        self.patience, self.match_threshold = patience, match_threshold
        self.embed_weight, self.momentum = embed_weight, momentum
        self.motion, self.velocity_momentum = motion, velocity_momentum
        self.frame = -1
        self.next_id = 1
        self.tracks: list[_Track] = []
        self.finished: list[int] = []
        """Ids of tracks finished by the last ``update`` (cleared at each call)."""

    def update(self, detections: Detections, score_threshold: float | None = None) -> Detections:
        """Match one frame's detections to the live tracks; returns the tracked ones with ``track_ids`` [N] int64:
        every detection scoring ``>= score_threshold`` (all without it) and the weaker ones that continued a track."""
        self.frame += 1
        confident = np.ones(len(detections), bool) if score_threshold is None else \
            np.asarray(detections.scores) >= score_threshold
        ids = np.zeros(len(detections), np.int64)
        free = list(range(len(self.tracks)))
        for rows in (np.flatnonzero(confident), np.flatnonzero(~confident)):
            for det, trk in self._assign(detections, rows, free):
                self._refresh(self.tracks[trk], detections, det)
                ids[det] = self.tracks[trk].track_id
                free.remove(trk)
        for det in np.flatnonzero(confident & (ids == 0)).tolist():
            embed = None if detections.query_embeds is None else self._unit(detections.query_embeds[det])
            self.tracks.append(_Track(self.next_id, embed, detections.boxes[det].astype(np.float64), self.frame))
            ids[det] = self.next_id
            self.next_id += 1
        alive = [t for t in self.tracks if self.frame - t.last_frame <= self.patience]
        self.finished = [t.track_id for t in self.tracks if self.frame - t.last_frame > self.patience]
        self.tracks = alive
        tracked = replace(detections, track_ids=ids)
        return tracked if (ids > 0).all() else tracked[ids > 0]

    def _assign(self, detections: Detections, rows: np.ndarray, free: list[int]) -> list[tuple[int, int]]:
        """Accepted (detection, track) pairs between detections ``rows`` and the tracks ``free``."""
        if not len(rows) or not free:
            return []
        similarity = self._similarity(detections[rows], [self.tracks[i] for i in free])
        matched_rows, cols = linear_sum_assignment(-similarity)
        return [(int(rows[r]), free[c]) for r, c in zip(matched_rows, cols) if similarity[r, c] >= self.match_threshold]

    @staticmethod
    def _unit(vector: np.ndarray) -> np.ndarray:
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _predicted_box(self, track: _Track) -> np.ndarray:
        if not self.motion or track.velocity is None:
            return track.box
        return track.box + track.velocity * (self.frame - track.last_frame)

    def _similarity(self, detections: Detections, tracks: list[_Track]) -> np.ndarray:
        """[N, T] similarity of detections to tracks."""
        iou = box_iou(detections.boxes, np.stack([self._predicted_box(t) for t in tracks]))
        if detections.query_embeds is None or any(t.embed is None for t in tracks):
            return iou
        embeds = detections.query_embeds / np.maximum(np.linalg.norm(detections.query_embeds, axis=1, keepdims=True),
                                                      1e-12)
        cosine = embeds @ np.stack([t.embed for t in tracks]).T
        return self.embed_weight * cosine + (1.0 - self.embed_weight) * iou

    def _refresh(self, track: _Track, detections: Detections, det: int) -> None:
        box = detections.boxes[det].astype(np.float64)
        step = (box - track.box) / (self.frame - track.last_frame)
        track.velocity = step if track.velocity is None else \
            self.velocity_momentum * track.velocity + (1.0 - self.velocity_momentum) * step
        track.box, track.last_frame = box, self.frame
        if track.embed is not None and detections.query_embeds is not None:
            new = self._unit(detections.query_embeds[det])
            track.embed = self._unit(self.momentum * track.embed + (1.0 - self.momentum) * new)
