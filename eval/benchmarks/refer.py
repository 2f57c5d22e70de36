"""RefCOCO / RefCOCO+ / RefCOCOg (lichengunc/refer layout): REC Acc@0.5 and RES cIoU / gIoU / Prec@X.

Every sentence of every ref of the split is one sample (the papers evaluate per sentence). REC: the predicted
box hits when its IoU with the referent's box is >= 0.5 (no box = a miss). RES: cIoU = ΣI / ΣU over the
sentences, gIoU (= mIoU) the mean per-sentence IoU, 1 when prediction and truth are both empty
(:mod:`eval.segmentation_metrics`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.models import EvalModel
from eval.runner import Benchmark, EvalResult
from eval.segmentation_metrics import SegmentationScores, intersection_union
from glee_core.image_io import load_image
from glee_core.mask_ops import box_iou
from train.data.readers import read_refer

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "refclef": "unc", "shapeworld": "unc"}
PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class ReferRecord:
    """One sentence's outcome: box IoU (0 without a box) and the mask's intersection / union in pixels."""

    sent_id: int
    box_iou: float
    intersection: int
    union: int


class ReferBenchmark(Benchmark):
    """``dataset`` (refcoco, refcoco+, refcocog, ...) under ``data_root`` (``<data_root>/<dataset>/refs(<split_by>).p``
    + ``instances.json``; images where :func:`train.data.readers.read_refer` finds them), one ``split``."""

    def __init__(self, data_root: str | Path, dataset: str = "refcoco", split: str = "val", *,
                 split_by: str | None = None, image_root: str | Path | None = None):
        self.data_root, self.dataset, self.split = Path(data_root), dataset, split
        self.split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
        folder = self.data_root / dataset
        needed = [folder / "instances.json", folder / f"refs({self.split_by}).p"]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{dataset}: {', '.join(missing)} not found. Expected the lichengunc/refer layout "
                                    f"<data_root>/{dataset}/{{instances.json, refs({self.split_by}).p}} with "
                                    "images under <data_root>/images/mscoco/images/train2014")
        refs = read_refer(self.data_root, dataset, self.split_by, split, image_root)
        self.samples = [(ref, sentence, sent_id) for ref in refs
                        for sentence, sent_id in zip(ref.sentences, ref.sent_ids or range(len(ref.sentences)))]
        self.name = f"{dataset} {split}"

    def __len__(self) -> int:
        return len(self.samples)

    def run_sample(self, model: EvalModel, index: int) -> ReferRecord:
        ref, sentence, sent_id = self.samples[index]
        image = load_image(ref.image.path)
        height, width = image.shape[:2]
        target = ref.image.instances[0]
        return refer_record(model, image, sentence, target.box, target.mask(height, width), int(sent_id))

    def score(self, records: list[ReferRecord]) -> EvalResult:
        return referring_result(records)

    def settings(self) -> dict[str, Any]:
        return {"data_root": str(self.data_root), "dataset": self.dataset, "split_by": self.split_by,
                "split": self.split, "rec_iou_threshold": 0.5}


def refer_record(model: EvalModel, image: np.ndarray, text: str, box: np.ndarray, mask: np.ndarray,
                 sample_id: int) -> ReferRecord:
    """Ask ``model`` for the object ``text`` describes and compare with the truth (``box`` [4] xyxy, ``mask``
    bool [H, W]): no predicted box counts as box IoU 0."""
    found_box, found_mask = model.refer(image, text)
    hit = 0.0 if found_box is None else float(box_iou(np.asarray(found_box, np.float32)[None], box[None])[0, 0])
    return ReferRecord(sample_id, hit, *intersection_union(found_mask, mask))


def referring_result(records: list[ReferRecord]) -> EvalResult:
    """REC Acc@0.5 and RES cIoU / gIoU / Prec@X of sentence records."""
    masks = SegmentationScores()
    for record in records:
        masks.add_counts(record.intersection, record.union)
    accuracy = float(np.mean([r.box_iou >= 0.5 for r in records])) if records else float("nan")
    metrics = {"REC Acc@0.5": accuracy, "RES cIoU": masks.ciou, "RES gIoU": masks.giou}
    metrics.update({f"RES Prec@{t}": masks.precision_at(t) for t in PRECISION_THRESHOLDS})
    return EvalResult(metrics=metrics, counts={"sentences": len(records)},
                      rows=[(name, value) for name, value in metrics.items()])
