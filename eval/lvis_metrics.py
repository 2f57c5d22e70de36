"""LVIS AP with its federated rules, computed by the official lvis-api (PyPI ``lvis``; DATA_FORMATS.md §2).

lvis-api's rules: a detection of category c on image I is evaluated only when c has ground truth on I or is in
I's ``neg_category_ids``; on images listing c in ``not_exhaustive_category_ids`` unmatched detections of c are
ignored; at most 300 detections per image (the top scores over all categories). Otherwise COCO's protocol: IoU
0.50:0.05:0.95, 101 recall points, COCO's area bins; APr / APc / APf average the categories whose ``frequency``
is "r" / "c" / "f". A number without ground truth behind it (lvis-api's -1) is NaN here.

lvis 0.5.3, the latest release, calls ``np.float``, which numpy 1.24 removed; lvis-api's main branch replaced
it by the builtin ``float`` (lvis-dataset/lvis-api#39) without a release. :func:`_lvis_compat` supplies exactly
that alias while lvis-api runs, and keeps its loggers quiet.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from eval.coco_metrics import (CocoScores, category_summaries, check_has_annotations, check_iou_type,
                               copy_for_evaluation, nan_if_undefined)
from eval.predictions import check_results

_root_handlers = list(logging.root.handlers)
try:
    from lvis import LVIS, LVISEval, LVISResults
except ImportError as error:  # an optional dependency (the ``eval`` extra)
    raise ImportError("LVIS evaluation needs the lvis package: pip install 'gleekit[eval]' "
                      "(or pip install lvis==0.5.3)") from error
finally:  # importing lvis calls logging.basicConfig, which would take over the application's root logger
    logging.root.handlers[:] = _root_handlers

LVIS_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR@300")
MAX_DETS = 300
FREQUENCIES = ("r", "c", "f")
_IMAGE_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")


@dataclass
class LvisScores(CocoScores):
    """As :class:`eval.coco_metrics.CocoScores` with ``stats`` named :data:`LVIS_STATS` (AR@300: recall with
    300 detections per image); per-category AP and the PR curve use all areas and 300 detections."""


class _FromDict:
    """lvis 0.5.3 reads the ground truth from a path only; these classes also take the annotation dict."""

    def _load_json(self, path):
        return path if isinstance(path, dict) else super()._load_json(path)


class _GroundTruth(_FromDict, LVIS):
    pass


class _Results(_FromDict, LVISResults):
    """lvis 0.5.3 fails on an empty results list; an empty one here is a ground truth without annotations."""

    def __init__(self, gt: LVIS, results: list[dict]) -> None:
        if results:
            super().__init__(gt, results, max_dets=MAX_DETS)
        else:
            LVIS.__init__(self, {**gt.dataset, "annotations": []})


@contextlib.contextmanager
def _lvis_compat() -> Iterator[None]:
    """``np.float`` (= ``float``) while lvis-api runs, on numpy versions that removed it; lvis-api's info and
    warning lines (e.g. "Assuming user provided the results in correct format") and its use of the deprecated
    ``Logger.warn`` silenced."""
    logger = logging.getLogger("lvis")
    level = logger.level
    logger.setLevel(logging.ERROR)
    alias = "float" not in np.__dict__
    if alias:
        np.float = float
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The 'warn' method is deprecated", category=DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)
        if alias:
            del np.float


def _check_lvis_fields(gt: dict) -> None:
    """The fields lvis-api reads beyond COCO's, checked up front (it would raise a bare KeyError)."""
    for index, image in enumerate(gt["images"]):
        for key in _IMAGE_KEYS:
            if not isinstance(image.get(key), list):
                raise ValueError(f"LVIS ground truth images[{index}] (id {image.get('id')}) needs a list {key!r}")
    for index, category in enumerate(gt["categories"]):
        if category.get("frequency") not in FREQUENCIES:
            raise ValueError(f"LVIS ground truth categories[{index}] (id {category.get('id')}) needs 'frequency' "
                             f"in {FREQUENCIES}, got {category.get('frequency')!r}")
    for index, annotation in enumerate(gt["annotations"]):
        if "area" not in annotation:
            raise ValueError(f"LVIS ground truth annotations[{index}] (id {annotation.get('id')}) has no 'area' "
                             "(the area bins read it)")


def lvis_scores(gt: dict, results: list[dict], iou_type: str) -> LvisScores:
    """Score ``results`` (LVIS results dicts, as COCO's; checked by :func:`eval.predictions.check_results`)
    against ``gt`` (an LVIS annotation dict) with ``iou_type`` "bbox" or "segm", by lvis-api's ``LVISEval``.
    No predictions score 0; a ground truth without annotations raises ValueError."""
    check_iou_type(iou_type)
    check_has_annotations(gt)
    _check_lvis_fields(gt)
    check_results(results, gt, need_masks=iou_type == "segm")
    gt, results = copy_for_evaluation(gt, results)
    with _lvis_compat():
        lvis_gt = _GroundTruth(gt)
        evaluator = LVISEval(lvis_gt, _Results(lvis_gt, results), iou_type)
        evaluator.params.max_dets = MAX_DETS
        evaluator.run()
    params = evaluator.params
    names = [lvis_gt.cats[category_id]["name"] for category_id in params.cat_ids]
    precision = evaluator.eval["precision"][:, :, :, params.area_rng_lbl.index("all")]
    per_category, pr_curve = category_summaries(precision, params.iou_thrs, params.rec_thrs, names)
    stats = {name: nan_if_undefined(evaluator.results[name]) for name in LVIS_STATS}
    return LvisScores(stats, per_category, pr_curve)
