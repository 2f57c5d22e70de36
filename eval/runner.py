"""One way to run every benchmark: shard its samples over processes, predict, gather, score.

A :class:`Benchmark` knows its samples (read from an official format), how to turn one sample into a small,
picklable *record* with a model (RLE masks, boxes, intersections and unions — never full-size arrays), and how to
score a list of records. :func:`run_benchmark` runs it in one process or in several (``accelerate launch``):
process ``r`` of ``n`` takes samples ``r, r + n, ...``, the records are gathered and put back in sample order
before scoring, so the numbers do not depend on the number of processes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.models import EvalModel


@dataclass
class EvalResult:
    """A benchmark's scores: every number in ``metrics`` (name -> value), ``counts`` (what was evaluated),
    ``rows`` the result table (metric, value) in the order the papers print it (float scores in 0..1,
    int counts), ``per_category`` AP per
    category name where it exists, ``pr_curve`` (recall [101], precision [101]) where it exists."""

    metrics: dict[str, float]
    counts: dict[str, int]
    rows: list[tuple[str, float]]
    per_category: dict[str, float] = field(default_factory=dict)
    pr_curve: tuple[list[float], list[float]] | None = None


class Benchmark(ABC):
    """A dataset split in an official format plus the protocol that scores a model on it."""

    name: str = "benchmark"

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples (images, expressions, videos...)."""

    @abstractmethod
    def run_sample(self, model: EvalModel, index: int) -> Any:
        """Predict sample ``index`` and return a small picklable record."""

    def run_batch(self, model: EvalModel, indices: list[int]) -> list[Any]:
        """Records of several samples; benchmarks whose model call takes a batch (images) override this."""
        return [self.run_sample(model, index) for index in indices]

    def records_from_predictions(self, predictions: Any) -> list[Any]:
        """Records from a predictions file's content (official submission format), so results made elsewhere are
        scored by the same code; benchmarks without a submission format refuse."""
        raise ValueError(f"{self.name} has no submission format to score predictions from")

    @abstractmethod
    def score(self, records: list[Any]) -> EvalResult:
        """Scores of the records of samples ``0..len(records)-1`` (in sample order)."""

    def settings(self) -> dict[str, Any]:
        """Everything that changes the numbers (data files, split, thresholds, image sizes)."""
        return {}

    def write_predictions(self, records: list[Any], path: Path) -> Path | None:
        """Write the predictions in the benchmark's official submission format; None when it has none."""
        return None


def _distributed():
    """The accelerate ``PartialState`` when launched with several processes (``accelerate launch --multi_gpu
    --num_processes N``, or torchrun), else None. Without CUDA the processes talk over gloo on the CPU."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def collect_records(benchmark: Benchmark, model: EvalModel, *, limit: int | None = None, batch_size: int = 1,
                    progress: bool = True) -> list[Any] | None:
    """Run ``model`` on the first ``limit`` samples (all when None), ``batch_size`` at a time: their records in
    sample order on the main process, None on the others (under ``accelerate launch``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = len(benchmark) if limit is None else min(limit, len(benchmark))
    if total == 0:
        raise ValueError(f"{benchmark.name}: no samples to evaluate (the split is empty or --limit is 0)")
    state = _distributed()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    mine = list(range(rank, total, world))
    local = []
    with tqdm(total=len(mine), desc=benchmark.name, disable=not progress or rank != 0) as bar:
        for start in range(0, len(mine), batch_size):
            indices = mine[start:start + batch_size]
            local.extend(zip(indices, benchmark.run_batch(model, indices)))
            bar.update(len(indices))
    if state is not None:
        from accelerate.utils import gather_object

        local = gather_object(local)
        if not state.is_main_process:
            return None
    return [record for _, record in sorted(local, key=lambda item: item[0])]


def run_benchmark(benchmark: Benchmark, model: EvalModel, *, limit: int | None = None, batch_size: int = 1,
                  progress: bool = True) -> tuple[list[Any], EvalResult] | None:
    """:func:`collect_records` then score: ``(records, result)`` on the main process, None on the others."""
    records = collect_records(benchmark, model, limit=limit, batch_size=batch_size, progress=progress)
    return None if records is None else (records, benchmark.score(records))
