"""COCO box / mask AP and AR as pycocotools' ``COCOeval`` computes them (DATA_FORMATS.md §1), printing silenced.

Per image and category, detections (top 100 by score) are matched greedily to the ground truth at each IoU
threshold 0.50:0.05:0.95; precision is made non-increasing and read at 101 recall points; AP is the mean over
those points, the thresholds and the categories with ground truth. The 12 standard numbers are
:data:`COCO_STATS`; a number whose area bin has no ground truth (pycocotools prints -1) is NaN here.
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from eval.predictions import check_results

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


@dataclass
class CocoScores:
    """``stats``: name -> value in [0, 1], in the order pycocotools prints them (NaN where undefined);
    ``per_category``: category name -> AP (IoU 0.50:0.95, all areas, the maximum detections of AP), for the
    categories with ground truth only; ``pr_curve``: (recall [101], precision [101]) at IoU 0.5, all areas,
    precision averaged over the categories with ground truth."""

    stats: dict[str, float]
    per_category: dict[str, float]
    pr_curve: tuple[list[float], list[float]]


def check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")


def check_has_annotations(gt: dict) -> None:
    """AP is undefined without ground-truth objects: refuse that early and clearly."""
    if not gt.get("annotations"):
        raise ValueError(f"the ground truth has no annotations ({len(gt.get('images', []))} images): "
                         "AP is undefined without ground-truth objects")


def copy_for_evaluation(gt: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """Copies of the annotation and result dicts: pycocotools and lvis-api write into them (ids, areas, masks)."""
    return {**gt, "annotations": [dict(a) for a in gt["annotations"]]}, [dict(r) for r in results]


def nan_if_undefined(value: float) -> float:
    """pycocotools and lvis-api report -1 for "no ground truth in this bin"; NaN cannot be averaged by accident."""
    return float(value) if value > -1 else math.nan


def category_summaries(precision: np.ndarray, iou_thresholds: np.ndarray, recall_points: np.ndarray,
                       names: list[str]) -> tuple[dict[str, float], tuple[list[float], list[float]]]:
    """Per-category AP and the mean PR curve at IoU 0.5 from ``precision`` [T, R, K] (IoU thresholds x recall
    points x categories, -1 for a category without ground truth; ``names`` [K])."""
    has_gt = (precision > -1).any(axis=(0, 1))
    per_category = {names[k]: float(precision[:, :, k].mean()) for k in np.flatnonzero(has_gt)}
    at50 = precision[int(np.flatnonzero(np.isclose(iou_thresholds, 0.5))[0])][:, has_gt]  # [R, K with GT]
    return per_category, ([float(r) for r in recall_points], [float(p) for p in at50.mean(axis=1)])


def _coco(gt: dict, annotations: list[dict]) -> COCO:
    api = COCO()
    api.dataset = {**gt, "annotations": annotations}
    api.createIndex()
    return api


def coco_scores(gt: dict, results: list[dict], iou_type: str) -> CocoScores:
    """Score ``results`` (COCO results dicts, checked by :func:`eval.predictions.check_results`) against
    ``gt`` (a COCO annotation dict: images, annotations, categories) with ``iou_type`` "bbox" or "segm".
    No predictions score 0; a ground truth without annotations raises ValueError."""
    check_iou_type(iou_type)
    check_has_annotations(gt)
    check_results(results, gt, need_masks=iou_type == "segm")
    gt, results = copy_for_evaluation(gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco(gt, gt["annotations"])
        coco_dt = coco_gt.loadRes(results) if results else _coco(gt, [])  # loadRes fails on an empty list
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    params = evaluator.params
    names = [coco_gt.cats[category_id]["name"] for category_id in params.catIds]
    precision = evaluator.eval["precision"][:, :, :, params.areaRngLbl.index("all"), -1]  # maxDets 100
    per_category, pr_curve = category_summaries(precision, params.iouThrs, params.recThrs, names)
    stats = {name: nan_if_undefined(value) for name, value in zip(COCO_STATS, evaluator.stats)}
    return CocoScores(stats, per_category, pr_curve)
