"""MOTChallenge (MOT16 / MOT17 / MOT20) box tracking, scored by TrackEval's official MOTChallenge protocol.

One sample is one sequence: the model tracks ``categories`` (default ``person``) through its frames and the
record is the sequence's results file text. Scoring writes the records as a tracker folder and has
``trackeval.datasets.MotChallenge2DBox`` load and preprocess each sequence — the official rules: predictions
matched at IoU >= 0.5 to a distractor box (classes 2, 7, 8, 12, and 6 for MOT20) are removed; only class-1
ground truth with conf != 0 is evaluated — then :func:`eval.tracking_metrics.scores_from_sequences` runs
trackeval's HOTA, CLEAR and Identity and combines the sequences, as ``trackeval.Evaluator`` does.
Scores are fractions (MOTA can be negative).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.models import EvalModel
from train.data.mot_format import LAYOUT, SeqInfo, list_sequences, read_mot_txt, read_seqinfo, write_results
from eval.runner import Benchmark, EvalResult
from eval.tracking_metrics import TrackingScores, scores_from_sequences
from glee_core.structures import Categories

RULES = ("MOT16", "MOT17", "MOT20")
TRACKER = "gleekit"


@dataclass
class MotRecord:
    """One sequence's predictions: its folder name and its results file text (``Tracks.to_mot()``)."""

    sequence: str
    text: str


class MotBenchmark(Benchmark):
    """The sequences of ``<data_root>/<split>``; ``rules`` picks the challenge whose distractor classes apply."""

    name = "MOTChallenge"

    def __init__(self, data_root: str | Path, split: str = "train", *, categories: tuple[str, ...] = ("person",),
                 score_threshold: float = 0.2, mode: str = "online", rules: str = "MOT17") -> None:
        if rules not in RULES:
            raise ValueError(f"rules must be one of {RULES}, got {rules!r}")
        self.data_root, self.split, self.rules = Path(data_root), split, rules
        self.categories = Categories(list(categories))
        self.score_threshold, self.mode = score_threshold, mode
        self.sequences = [read_seqinfo(seq) for seq in list_sequences(self.data_root / split)]
        for info in self.sequences:
            _check_gt(info)

    def __len__(self) -> int:
        return len(self.sequences)

    def run_sample(self, model: EvalModel, index: int) -> MotRecord:
        info = self.sequences[index]
        tracks = model.predictor.track(info.frame_paths(), self.categories, mode=self.mode,
                                       score_threshold=self.score_threshold)
        return MotRecord(info.path.name, tracks.to_mot())

    def score(self, records: list[MotRecord]) -> EvalResult:
        scores, boxes = self._trackeval(records)
        counts = {"sequences": len(records), "frames": scores.num_frames, "gt_tracks": scores.num_gt_tracks,
                  "pred_tracks": scores.num_pred_tracks, **boxes}
        return EvalResult(metrics=scores.metrics(), counts=counts, rows=scores.rows())

    def settings(self) -> dict[str, Any]:
        return {"data_root": str(self.data_root), "split": self.split, "rules": self.rules,
                "categories": list(self.categories.names), "score_threshold": self.score_threshold,
                "mode": self.mode, "match_iou": 0.5, "hota_iou": "0.05:0.95:0.05"}

    def write_predictions(self, records: list[MotRecord], path: Path) -> Path:
        """``<path>/<SEQ>.txt`` for every sequence (zip the folder's files to submit); returns ``path``."""
        path = Path(path)
        for record in records:
            write_results(record.text, path / f"{record.sequence}.txt")
        return path

    def _trackeval(self, records: list[MotRecord]) -> tuple[TrackingScores, dict[str, int]]:
        """Scores over the records' sequences, each loaded and preprocessed by TrackEval's MOTChallenge dataset
        (what ``trackeval.Evaluator`` does per sequence), and the box counts left after preprocessing."""
        from trackeval.datasets import MotChallenge2DBox

        lengths = {info.path.name: info.length for info in self.sequences[:len(records)]}
        if [record.sequence for record in records] != list(lengths):
            raise ValueError(f"records are for sequences {[r.sequence for r in records]}, "
                             f"expected the first {len(records)} of {self.data_root / self.split}: {list(lengths)}")
        with tempfile.TemporaryDirectory() as folder:
            self.write_predictions(records, Path(folder) / TRACKER / "data")
            dataset = MotChallenge2DBox({
                "GT_FOLDER": str(self.data_root / self.split), "TRACKERS_FOLDER": folder, "OUTPUT_FOLDER": folder,
                "TRACKERS_TO_EVAL": [TRACKER], "TRACKER_SUB_FOLDER": "data", "SKIP_SPLIT_FOL": True,
                "SEQ_INFO": lengths, "BENCHMARK": self.rules, "SPLIT_TO_EVAL": self.split, "DO_PREPROC": True,
                "PRINT_CONFIG": False})
            sequences = [dataset.get_preprocessed_seq_data(dataset.get_raw_seq_data(TRACKER, seq), "pedestrian")
                         for seq in lengths]
        boxes = {"gt_boxes": sum(s["num_gt_dets"] for s in sequences),
                 "pred_boxes": sum(s["num_tracker_dets"] for s in sequences)}
        return scores_from_sequences(sequences), boxes


def _check_gt(info: SeqInfo) -> None:
    """Fail before any prediction when a sequence's ground truth is missing, malformed or past its last frame."""
    if not info.gt_path.is_file():
        raise FileNotFoundError(f"{info.path.name}/gt/gt.txt not found in {info.path.parent} (test splits have no "
                                f"public ground truth: submit predictions to motchallenge.net); {LAYOUT}")
    rows = read_mot_txt(info.gt_path)
    if len(rows) and rows.shape[1] < 8:
        raise ValueError(f"{info.gt_path} has {rows.shape[1]} columns; ground truth needs "
                         "frame,id,x,y,w,h,conf,class[,visibility]")
    if len(rows) and rows[:, 0].max() > info.length:
        raise ValueError(f"{info.gt_path} has frame {int(rows[:, 0].max())}, past seqLength {info.length} "
                         f"in {info.path / 'seqinfo.ini'}")
