"""COCO detection and instance segmentation: box and mask AP by pycocotools (:mod:`eval.coco_metrics`).

One sample is one image: the model detects every category of the split (each category name, as in the
annotation file, is one text prompt) and keeps its ``topk`` best detections without a score threshold (AP
rewards low-scoring detections). The record is the image's results in the official results format (bbox xywh,
score, compressed-RLE segmentation), which :meth:`write_predictions` writes as the submission file.
:class:`DetectionBenchmark` is shared with LVIS (:mod:`eval.benchmarks.lvis`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.coco_metrics import IOU_TYPES, CocoScores, check_iou_type, coco_scores
from eval.layout import first_existing
from eval.models import EvalModel
from eval.predictions import check_results, group_results, save_results
from eval.runner import Benchmark, EvalResult
from glee_core.structures import Categories
from train.data.readers import read_coco
from train.data.records import Dataset

COCO_LAYOUT = "<data_root>/annotations/instances_<split>.json, images in <data_root>/<split>/ (e.g. val2017)"
ROW_PREFIX = {"bbox": "box", "segm": "mask"}

Scorer = Callable[[dict, list[dict], str], CocoScores]


class DetectionBenchmark(Benchmark):
    """Images of a COCO-family annotation file scored by ``scorer`` (COCO or LVIS AP) for each IoU type.

    ``dataset`` is the reader's view of ``annotation_file`` (image paths, categories); the scorer gets the file's
    own dicts, so the numbers see exactly the official annotations. ``max_dets``: detections per image the
    metric counts."""

    max_dets: int = 100

    def __init__(self, annotation_file: Path, dataset: Dataset, *, split: str, topk: int,
                 iou_types: tuple[str, ...], scorer: Scorer) -> None:
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if not iou_types:
            raise ValueError("iou_types must name at least one of 'bbox', 'segm'")
        for iou_type in iou_types:
            check_iou_type(iou_type)
        self.annotation_file, self.split, self.topk = annotation_file, split, topk
        self.iou_types = tuple(t for t in IOU_TYPES if t in iou_types)  # box first, as the papers print
        self.scorer = scorer
        self.images = [(image.image_id, image.path) for image in dataset.images]
        self.prompt = Categories(dataset.category_names())
        self.category_ids = dataset.category_ids()
        with open(annotation_file, encoding="utf-8") as handle:
            self.ground_truth = json.load(handle)

    def __len__(self) -> int:
        return len(self.images)

    def run_sample(self, model: EvalModel, index: int) -> list[dict[str, Any]]:
        return self.run_batch(model, [index])[0]

    def run_batch(self, model: EvalModel, indices: list[int]) -> list[list[dict[str, Any]]]:
        """The images of ``indices`` in one predictor call per group of the same padded input size (padding
        changes results, so every image scores as it does alone; the text side is encoded once per call)."""
        images = [self.images[index] for index in indices]
        found = model.predictor.predict_each([path for _, path in images], self.prompt, topk=self.topk)
        return [detections.to_coco(image_id, self.category_ids) for (image_id, _), detections in zip(images, found)]

    def records_from_predictions(self, predictions: Any) -> list[list[dict[str, Any]]]:
        """A results list (checked against the whole annotation file) grouped into per-image records."""
        check_results(predictions, self.ground_truth, need_masks="segm" in self.iou_types)
        return group_results(predictions, "image_id", [image_id for image_id, _ in self.images])

    def ground_truth_of_first(self, count: int) -> dict:
        """The annotation dict restricted to the first ``count`` images (a ``--limit`` run scores only those)."""
        image_ids = {image_id for image_id, _ in self.images[:count]}
        return {**self.ground_truth,
                "images": [image for image in self.ground_truth["images"] if image["id"] in image_ids],
                "annotations": [a for a in self.ground_truth["annotations"] if a["image_id"] in image_ids]}

    def score(self, records: list[list[dict[str, Any]]]) -> EvalResult:
        """AP of the first ``len(records)`` images; ``per_category`` and ``pr_curve`` of the last IoU type
        (mask AP when masks are scored)."""
        gt = self.ground_truth_of_first(len(records))
        results = [result for record in records for result in record]
        scores = {iou_type: self.scorer(gt, results, iou_type) for iou_type in self.iou_types}
        metrics = {f"{t}/{name}": value for t, s in scores.items() for name, value in s.stats.items()}
        rows = [(f"{ROW_PREFIX[t]} {name}", value) for t, s in scores.items() for name, value in s.stats.items()]
        last = scores[self.iou_types[-1]]
        counts = {"images": len(gt["images"]), "annotations": len(gt["annotations"]), "predictions": len(results)}
        return EvalResult(metrics=metrics, counts=counts, rows=rows, per_category=last.per_category,
                          pr_curve=last.pr_curve)

    def settings(self) -> dict[str, Any]:
        return {"annotation_file": str(self.annotation_file), "split": self.split, "topk": self.topk,
                "iou_types": list(self.iou_types), "max_dets": self.max_dets, "score_threshold": 0.0,
                "prompts": "every category name as in the annotation file"}

    def write_predictions(self, records: list[list[dict[str, Any]]], path: Path) -> Path:
        """Write the results file (a JSON list of result dicts, the format the official evaluation reads)."""
        return save_results(records, path)


class CocoBenchmark(DetectionBenchmark):
    """COCO ``split`` (e.g. val2017) under ``data_root`` in the official layout (:data:`COCO_LAYOUT`); at most
    ``topk`` detections per image (COCO's AP counts 100)."""

    def __init__(self, data_root: str | Path, split: str = "val2017", *, topk: int = 100,
                 iou_types: tuple[str, ...] = ("bbox", "segm")) -> None:
        root = Path(data_root)
        annotation_file = first_existing([root / "annotations" / f"instances_{split}.json"],
                                         f"COCO {split!r} annotations", COCO_LAYOUT)
        super().__init__(annotation_file, read_coco(annotation_file, root / split), split=split, topk=topk,
                         iou_types=iou_types, scorer=coco_scores)
        self.name = f"coco {split}"
