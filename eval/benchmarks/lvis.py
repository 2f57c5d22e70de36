"""LVIS v1: box and mask AP with the federated rules, APr / APc / APf, by lvis-api (:mod:`eval.lvis_metrics`).

Run as COCO (:class:`eval.benchmarks.coco.DetectionBenchmark`): one image per sample, every category name as in
the file is a prompt (GLEE's official LVIS evaluation prompts the raw names too), ``topk`` detections per image
(LVIS counts 300; the predictor keeps that many (query, class) pairs, more than the presets' ``test_topk``).
"""
from __future__ import annotations

from pathlib import Path

from eval.benchmarks.coco import DetectionBenchmark
from eval.layout import first_existing
from eval.lvis_metrics import MAX_DETS, lvis_scores
from train.data.readers import read_lvis

LVIS_LAYOUT = ("<data_root>/lvis_v1_<split>.json with the COCO 2017 images under <data_root>/train2017/ and "
               "<data_root>/val2017/ (each image is found through the last two parts of its coco_url)")


class LvisBenchmark(DetectionBenchmark):
    """LVIS ``split`` (``val``: lvis_v1_val.json) under ``data_root`` in the layout :data:`LVIS_LAYOUT`."""

    max_dets = MAX_DETS

    def __init__(self, data_root: str | Path, split: str = "val", *, topk: int = MAX_DETS,
                 iou_types: tuple[str, ...] = ("bbox", "segm")) -> None:
        root = Path(data_root)
        annotation_file = first_existing([root / f"lvis_v1_{split}.json"], f"LVIS {split!r} annotations",
                                         LVIS_LAYOUT)
        super().__init__(annotation_file, read_lvis(annotation_file, root), split=split, topk=topk,
                         iou_types=iou_types, scorer=lvis_scores)
        self.name = f"lvis {split}"
