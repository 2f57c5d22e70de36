"""YouTube-VIS track AP as the official ``YTVOSeval`` computes it (DATA_FORMATS.md §7).

A predicted track and a ground-truth track are compared by their spatio-temporal IoU
``Σ_t |P_t ∩ G_t| / Σ_t |P_t ∪ G_t|`` over the video's frames (a frame where one side is absent adds only the
other side's area to the union). Everything else is pycocotools' COCO protocol with videos in place of images:
greedy matching per (video, category) in decreasing score, crowd tracks ignored, 101-point interpolated AP over
IoU 0.50:0.05:0.95, at most 100 tracks per video (AR1 / AR10 keep 1 / 10). Size bins use each track's mean
non-empty frame area (small < 128², medium < 256², large above). A metric is NaN where it is undefined
(pycocotools prints -1): no ground truth in that size bin.
"""
from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from eval.coco_metrics import category_summaries, nan_if_undefined
from eval.predictions import PredictionError, id_problem, rle_problem, score_problem

RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")
METRICS = ("AP", "AP50", "AP75", "AR1", "AR10", "APs", "APm", "APl")  # the VIS papers' order, size bins last
AREA_RANGES = [[0, 1e5**2], [0, 128**2], [128**2, 256**2], [256**2, 1e5**2]]  # all, small, medium, large (px²)
_STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR1": 6, "AR10": 7}  # COCOeval.stats

RLE = dict[str, Any]


@dataclass
class YtvisScores:
    """``metrics``: :data:`METRICS` in order (NaN where undefined); ``per_category``: AP (IoU 0.50:0.95) per
    category name, for the categories with ground truth."""

    metrics: dict[str, float]
    per_category: dict[str, float]
    num_videos: int
    num_gt_tracks: int
    num_results: int


def track_iou(pred: Sequence[RLE | None], gt: Sequence[RLE | None]) -> float:
    """Spatio-temporal IoU of two tracks given as one compressed RLE (or None when absent) per frame; 0 when both
    are empty in every frame."""
    if len(pred) != len(gt):
        raise ValueError(f"the tracks have {len(pred)} and {len(gt)} frames")
    intersection = union = 0.0
    for p, g in zip(pred, gt):
        if p and g:
            both = float(mask_utils.area(mask_utils.merge([p, g], intersect=True)))
            intersection += both
            union += float(mask_utils.area(p)) + float(mask_utils.area(g)) - both
        elif p or g:
            union += float(mask_utils.area(p or g))
    return intersection / union if union else 0.0


def _mean_area(areas: Sequence[float | None]) -> float:
    """Mean of the present, non-zero frame areas (px²); 0 when there are none (YTVOS's ``avg_area``)."""
    present = [a for a in areas if a]
    return float(np.mean(present)) if present else 0.0


def _gt_frame_rle(segmentation: Any, height: int, width: int) -> RLE | None:
    """One ground-truth frame (polygons, uncompressed or compressed RLE; null / empty = absent) → compressed RLE."""
    if not segmentation:
        return None
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def _gt_tracks(gt: dict, videos: dict[int, dict]) -> list[dict]:
    tracks = []
    for index, ann in enumerate(gt["annotations"]):
        video = videos[ann["video_id"]]
        rles = [_gt_frame_rle(s, video["height"], video["width"]) for s in ann["segmentations"]]
        areas = ann.get("areas") or [float(mask_utils.area(r)) if r else None for r in rles]
        crowd = bool(ann.get("iscrowd", 0))
        tracks.append({"id": index + 1, "video_id": ann["video_id"], "category_id": ann["category_id"],
                       "segmentations": rles, "area": _mean_area(areas), "iscrowd": int(crowd), "ignore": crowd})
    return tracks


def check_ytvis_results(results: Any, gt: dict) -> None:
    """Raise :class:`eval.predictions.PredictionError` naming the first result the official server would reject
    or misread (the field checks are :mod:`eval.predictions`' own)."""
    if not isinstance(results, list):
        raise PredictionError(f"YouTube-VIS results must be a list of dicts, got {type(results).__name__}")
    videos = {video["id"]: video for video in gt["videos"]}
    category_ids = {category["id"] for category in gt["categories"]}
    for index, result in enumerate(results):
        problem = _result_problem(result, videos, category_ids)
        if problem:
            raise PredictionError(f"result {index}: {problem}")


def _result_problem(result: Any, videos: dict[int, dict], category_ids: set[int]) -> str | None:
    if not isinstance(result, dict):
        return f"must be a dict with {RESULT_KEYS}, got {type(result).__name__}"
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        return f"missing {missing}; a YouTube-VIS result has {RESULT_KEYS}"
    problem = (id_problem(result, "video_id", videos, "ground-truth video ids")
               or id_problem(result, "category_id", category_ids, "ground-truth category ids")
               or score_problem(result["score"]))
    if problem:
        return problem
    video, segmentations = videos[result["video_id"]], result["segmentations"]
    if not isinstance(segmentations, list) or len(segmentations) != video["length"]:
        count = len(segmentations) if isinstance(segmentations, list) else type(segmentations).__name__
        return (f"segmentations must list one entry per frame; got {count}, video {video['id']} has "
                f"{video['length']} frames")
    for t, rle in enumerate(segmentations):
        problem = rle_problem(rle, video["height"], video["width"]) if rle else None
        if problem:
            return f"frame {t}: {problem} (masks must have the video's original size)"
    return None


class _VideoEval(COCOeval):
    """pycocotools' ``COCOeval`` with videos as its images: tracks are matched by :func:`track_iou` and binned
    by their mean area; matching, accumulation and summary are pycocotools' own."""

    def __init__(self, gt_tracks: list[dict], dt_tracks: list[dict], video_ids: list[int], category_ids: list[int]):
        super().__init__(iouType="segm")
        self.params.imgIds = video_ids
        self.params.catIds = category_ids
        self.params.areaRng = AREA_RANGES
        self._tracks = gt_tracks, dt_tracks

    def _prepare(self) -> None:
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        for store, tracks in zip((self._gts, self._dts), self._tracks):
            for track in tracks:
                store[track["video_id"], track["category_id"]].append(dict(track))
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, video_id: int, category_id: int) -> np.ndarray:  # noqa: N802 (pycocotools' name)
        gt = self._gts[video_id, category_id]
        dt = sorted(self._dts[video_id, category_id], key=lambda d: -d["score"])[: self.params.maxDets[-1]]
        ious = np.zeros((len(dt), len(gt)))
        for i, j in np.ndindex(ious.shape):
            ious[i, j] = track_iou(dt[i]["segmentations"], gt[j]["segmentations"])
        return ious


def ytvis_scores(gt: dict, results: list[dict]) -> YtvisScores:
    """Score YouTube-VIS ``results`` (the submission list: ``video_id``, ``category_id``, ``score``,
    ``segmentations`` = compressed RLE or null per frame) against ``gt`` (the annotation json as a dict)."""
    if not gt.get("videos") or not gt.get("annotations"):
        raise ValueError("the ground truth has no videos or no annotations: YouTube-VIS valid/test are scored on the "
                         "CodaLab server; evaluate locally on a split with annotations (e.g. instances_val_sub.json)")
    check_ytvis_results(results, gt)
    videos = {video["id"]: video for video in gt["videos"]}
    names = {category["id"]: category["name"] for category in gt["categories"]}
    gt_tracks = _gt_tracks(gt, videos)
    dt_tracks = [{"id": index + 1, "video_id": r["video_id"], "category_id": r["category_id"], "score": r["score"],
                  "segmentations": r["segmentations"],
                  "area": _mean_area([float(mask_utils.area(s)) if s else None for s in r["segmentations"]])}
                 for index, r in enumerate(results)]
    evaluator = _VideoEval(gt_tracks, dt_tracks, sorted(videos), sorted(names))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: nan_if_undefined(evaluator.stats[_STATS_INDEX[name]]) for name in METRICS}
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [IoU, recall, category] at area "all", 100 dets
    params = evaluator.params
    per_category, _ = category_summaries(precision, params.iouThrs, params.recThrs, [names[c] for c in params.catIds])
    return YtvisScores(metrics, per_category, len(videos), len(gt_tracks), len(results))
