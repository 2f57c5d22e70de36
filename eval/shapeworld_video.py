"""Held-out tracking quality on shapeworld videos (objects move, occlude, enter and leave): HOTA, IDF1, MOTA
and ID switches (:mod:`eval.tracking_metrics`), class-agnostic, with every shape name as the prompt."""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from eval.tracking_metrics import GroundTruthFrame, TrackingScores, tracking_scores
from glee_core.predictor import GleePredictor
from glee_core.structures import Categories
from train.data.shapeworld import CATEGORY_NAMES, scene_seed
from train.data.shapeworld.video import generate_video


def evaluate_shapeworld_video(predictor: GleePredictor, num_videos: int = 20, split: str = "test", seed: int = 0,
                              mode: str = "online", score_threshold: float = 0.2,
                              progress: bool = True) -> TrackingScores:
    """Track every shape in ``num_videos`` held-out videos and score the tracks against the truth."""
    prompt = Categories(list(CATEGORY_NAMES))
    videos = []
    for index in tqdm(range(num_videos), desc=f"shapeworld videos ({mode})", disable=not progress):
        video = generate_video(scene_seed(split, index, seed), split=split)
        truth = [GroundTruthFrame(ids=np.asarray(f.track_ids, np.int64),
                                  boxes=np.array([o.box for o in f.objects], np.float32).reshape(-1, 4),
                                  masks=np.array([o.mask for o in f.objects], bool).reshape(-1, *f.image.shape[:2]))
                 for f in video.frames]
        tracks = predictor.track([f.image for f in video.frames], prompt, mode=mode, score_threshold=score_threshold)
        videos.append((truth, tracks))
    return tracking_scores(videos)
