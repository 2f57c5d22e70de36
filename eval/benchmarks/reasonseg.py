"""ReasonSeg (LISA): gIoU and cIoU, overall and split into short queries (``is_sentence`` false) and long ones.

One query per image, ``text[0]``, as LISA evaluates; ground-truth pixels of value 255 ("ignore" polygons) leave
both intersection and union (:mod:`eval.segmentation_metrics`). An LLM agent's answers are scored the same way,
and the counts also say how its queries ended ("agent selected", "agent no_match", "agent step_limit").
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.layout import first_existing
from eval.models import EvalModel
from eval.runner import Benchmark, EvalResult
from eval.segmentation_metrics import SegmentationScores, intersection_union
from glee_core.image_io import load_image
from train.data.readers import read_reasonseg

LAYOUT = "<data_root>/ReasonSeg/<split>/<name>.jpg + <name>.json (LISA: dataset/reason_seg/ReasonSeg/<split>)"


@dataclass
class ReasonRecord:
    """One query's outcome: whether it is a long sentence, its intersection / union in pixels, and how an agent's
    answer ended (None for other models)."""

    name: str
    is_sentence: bool
    intersection: int
    union: int
    stopped: str | None = None


class ReasonSegBenchmark(Benchmark):
    """The ``split`` folder (val or test) of ReasonSeg under ``data_root``."""

    def __init__(self, data_root: str | Path, split: str = "val"):
        root = Path(data_root)
        self.split_dir = first_existing([root / "ReasonSeg" / split, root / "reason_seg" / "ReasonSeg" / split,
                                         root / split], f"ReasonSeg split {split!r}", LAYOUT)
        self.records = read_reasonseg(self.split_dir)
        self.split = split
        self.name = f"ReasonSeg {split}"

    def __len__(self) -> int:
        return len(self.records)

    def run_sample(self, model: EvalModel, index: int) -> ReasonRecord:
        record = self.records[index]
        image = load_image(record.image_path)
        mask, stopped = model.reason(image, record.texts[0], sentence=record.is_sentence)
        i, u = intersection_union(mask, record.mask(*image.shape[:2]))
        return ReasonRecord(record.json_path.stem, record.is_sentence, i, u, stopped)

    def score(self, records: list[ReasonRecord]) -> EvalResult:
        groups = {"overall": records, "short": [r for r in records if not r.is_sentence],
                  "long": [r for r in records if r.is_sentence]}
        metrics: dict[str, float] = {}
        for group, members in groups.items():
            scores = SegmentationScores()
            for r in members:
                scores.add_counts(r.intersection, r.union)
            metrics[f"{group} gIoU"], metrics[f"{group} cIoU"] = scores.giou, scores.ciou
        counts = {group: len(m) for group, m in groups.items()}
        stops = Counter(r.stopped for r in records if r.stopped is not None)
        counts.update((f"agent {stop}", n) for stop, n in sorted(stops.items()))
        return EvalResult(metrics=metrics, counts=counts, rows=list(metrics.items()))

    def settings(self) -> dict[str, Any]:
        return {"split_dir": str(self.split_dir), "split": self.split, "query": "text[0]"}
