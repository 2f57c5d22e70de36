"""Held-out tracking quality on shapeworld videos (objects move, occlude, enter and leave): HOTA, IDF1, MOTA
and ID switches (:mod:`eval.tracking_metrics`), class-agnostic, with every shape name as the prompt. Videos are
generated from their index and the seed, so nothing is read from disk."""
from __future__ import annotations

from typing import Any

import numpy as np

from eval.models import EvalModel
from eval.runner import Benchmark, EvalResult
from eval.tracking_metrics import GroundTruthFrame, scores_from_sequences, sequence_data
from glee_core.structures import Categories
from train.data.shapeworld import CATEGORY_NAMES, scene_seed
from train.data.shapeworld.scene import object_boxes
from train.data.shapeworld.video import generate_video


class ShapeworldVideoBenchmark(Benchmark):
    """``num_videos`` fresh videos of ``split`` under ``seed``, tracked in ``mode`` (online / official).

    Online defaults (measured best with nano on 20 *validation* videos): a track starts from a detection scoring
    >= 0.25 and continues with one scoring >= 0.2 (``continue_threshold``, :meth:`GleePredictor.stream`)."""

    def __init__(self, num_videos: int = 20, *, split: str = "test", seed: int = 0, mode: str = "online",
                 score_threshold: float = 0.25, continue_threshold: float | None = 0.2):
        if num_videos < 1:
            raise ValueError(f"num_videos must be >= 1, got {num_videos}")
        self.num_videos, self.split, self.seed = num_videos, split, seed
        self.mode, self.score_threshold, self.continue_threshold = mode, score_threshold, continue_threshold
        self.name = f"shapeworld videos ({mode})"

    def __len__(self) -> int:
        return self.num_videos

    def run_sample(self, model: EvalModel, index: int) -> dict:
        video = generate_video(scene_seed(self.split, index, self.seed), split=self.split)
        truth = [GroundTruthFrame(ids=np.asarray(f.track_ids, np.int64),
                                  boxes=object_boxes(f.objects),
                                  masks=np.array([o.mask for o in f.objects], bool).reshape(-1, *f.image.shape[:2]))
                 for f in video.frames]
        online = {"continue_threshold": self.continue_threshold} if self.mode == "online" else {}
        tracks = model.predictor.track([f.image for f in video.frames], Categories(list(CATEGORY_NAMES)),
                                       mode=self.mode, score_threshold=self.score_threshold, **online)
        return sequence_data(truth, tracks)

    def score(self, records: list[dict]) -> EvalResult:
        scores = scores_from_sequences(records)
        return EvalResult(metrics=scores.metrics(), rows=scores.rows(),
                          counts={"videos": len(records), "frames": scores.num_frames,
                                  "true tracks": scores.num_gt_tracks, "predicted tracks": scores.num_pred_tracks})

    def settings(self) -> dict[str, Any]:
        return {"num_videos": self.num_videos, "split": self.split, "seed": self.seed, "mode": self.mode,
                "score_threshold": self.score_threshold, "continue_threshold": self.continue_threshold,
                "prompt": list(CATEGORY_NAMES)}
