"""YouTube-VIS 2019 / 2021 (and OVIS, same schema): video instance segmentation scored by track AP.

One sample is one video: the model tracks every category of the split (one text prompt each) through the
video's listed frames, and the record is the video's results in the official submission format (one dict per
track, compressed RLE or null per frame). Scores: :mod:`eval.ytvis_metrics` (YTVOSeval's AP / AR).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.layout import first_existing
from eval.models import EvalModel
from eval.predictions import group_results, save_results
from eval.runner import Benchmark, EvalResult
from eval.ytvis_metrics import AREA_RANGES, check_ytvis_results, ytvis_scores
from glee_core.structures import Categories
from train.data.readers.ytvis import read_ytvis

MODES = ("official", "online")
LAYOUT = ("<data_root>/<split>/instances.json (2021), or <data_root>/annotations/instances_<split>.json or "
          "<data_root>/<split>.json (2019); frames in <data_root>/<split>/JPEGImages/<video>/<frame>")


def annotation_candidates(data_root: Path, split: str) -> list[Path]:
    """Where a split's annotation file may be, in the order they are tried."""
    return [data_root / split / "instances.json", data_root / "annotations" / f"instances_{split}.json",
            data_root / f"{split}.json"]


class YtvisBenchmark(Benchmark):
    """The videos of ``split`` under ``data_root``. ``frames_root`` overrides ``<data_root>/<split>/JPEGImages``
    (GLEE's ``instances_val_sub.json`` lists frames of ``train/JPEGImages``). ``mode`` and ``score_threshold``
    go to :meth:`GleePredictor.track`; AP rewards low-scoring tracks, so the default keeps them all."""

    name = "ytvis"

    def __init__(self, data_root: str | Path, split: str = "valid", *, mode: str = "official",
                 score_threshold: float = 0.0, frames_root: str | Path | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.data_root, self.split, self.mode, self.score_threshold = Path(data_root), split, mode, score_threshold
        self.annotation_file = first_existing(annotation_candidates(self.data_root, split),
                                              f"YouTube-VIS {split!r} annotations", LAYOUT)
        self.frames_root = Path(frames_root) if frames_root is not None else self.data_root / split / "JPEGImages"
        self.videos, categories = read_ytvis(self.annotation_file, self.frames_root)
        self.prompt = Categories(list(categories.values()))
        self.category_ids = list(categories)
        with open(self.annotation_file, encoding="utf-8") as handle:
            self.ground_truth = json.load(handle)
        self.name = f"ytvis {split}"

    def __len__(self) -> int:
        return len(self.videos)

    def run_sample(self, model: EvalModel, index: int) -> list[dict[str, Any]]:
        video = self.videos[index]
        tracks = model.predictor.track(video.frame_paths, self.prompt, mode=self.mode,
                                       score_threshold=self.score_threshold)
        return tracks.to_ytvis(video.video_id, self.category_ids)

    def records_from_predictions(self, predictions: Any) -> list[list[dict[str, Any]]]:
        """A submission list (checked against the annotation file) grouped into per-video records."""
        check_ytvis_results(predictions, self.ground_truth)
        return group_results(predictions, "video_id", [video.video_id for video in self.videos])

    def score(self, records: list[list[dict[str, Any]]]) -> EvalResult:
        """Track AP of the first ``len(records)`` videos (the ground truth of the others is left out)."""
        video_ids = {video.video_id for video in self.videos[:len(records)]}
        gt = {"videos": [v for v in self.ground_truth["videos"] if v["id"] in video_ids],
              "annotations": [a for a in self.ground_truth.get("annotations", []) if a["video_id"] in video_ids],
              "categories": self.ground_truth["categories"]}
        scores = ytvis_scores(gt, [result for record in records for result in record])
        counts = {"videos": scores.num_videos, "gt_tracks": scores.num_gt_tracks,
                  "predicted_tracks": scores.num_results}
        return EvalResult(metrics=scores.metrics, counts=counts, rows=list(scores.metrics.items()),
                          per_category=scores.per_category)

    def settings(self) -> dict[str, Any]:
        return {"annotation_file": str(self.annotation_file), "frames_root": str(self.frames_root),
                "split": self.split, "mode": self.mode, "score_threshold": self.score_threshold,
                "iou_thresholds": "0.50:0.05:0.95", "max_dets": [1, 10, 100],
                "area_bins": [r[1] for r in AREA_RANGES[1:3]]}

    def write_predictions(self, records: list[list[dict[str, Any]]], path: Path) -> Path:
        """``<path>/results.json``: the submission list (zip it for the CodaLab server); returns the file."""
        return save_results(records, Path(path) / "results.json")
