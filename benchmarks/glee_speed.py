"""Per-image latency and peak memory of GleePredictor, random weights, official test sizes.

    python benchmarks/glee_speed.py [--presets lite-r50 tiny] [--categories 1 80 1203] [--repeats 3] [--device cpu]

Prints a table: preset, input size, number of category names, median latency (s/image, pre- and
post-processing included), peak resident memory growth on CPU (MiB) or peak CUDA memory, and the
ratio to the 1-category run of the same preset (these machines are noisy: compare ratios).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from glee_core.config import get_preset
from glee_core.modeling.glee import GleeModel
from glee_core.predictor import GleePredictor
from glee_core.structures import Categories

IMAGE_HW = (480, 640)  # a VGA photo; resized to the preset's test size by the predictor


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _names(count: int) -> list[str]:
    return [f"category number {i}" for i in range(count)]


def bench(preset: str, counts: list[int], repeats: int, device: str) -> list[tuple]:
    torch.manual_seed(0)
    model = GleeModel.from_config(get_preset(preset)).eval()
    predictor = GleePredictor(model, device=device)
    image = np.random.default_rng(0).integers(0, 255, (*IMAGE_HW, 3), dtype=np.uint8)
    spec = model.config.input
    size = f"{spec.lsj_size}²" if spec.lsj else f"{spec.min_size}/{spec.max_size}"
    rows = []
    for count in counts:
        prompt = Categories(_names(count))
        predictor.predict(image, prompt, topk=10)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        before = _rss_mib()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.predict(image, prompt, topk=10)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        memory = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mib()
        rows.append((preset, size, count, statistics.median(times), memory, memory - before))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "lite-r50"])
    parser.add_argument("--categories", nargs="+", type=int, default=[1, 80, 1203])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = Table(title=f"GleePredictor latency, random weights, {IMAGE_HW[0]}x{IMAGE_HW[1]} input, "
                        f"{args.device}, {torch.get_num_threads()} threads")
    for column in ("preset", "test size", "categories", "s / image", "× vs 1 cat.", "peak MiB"):
        table.add_column(column, justify="right")
    for preset in args.presets:
        rows = bench(preset, args.categories, args.repeats, args.device)
        base = rows[0][3]
        for name, size, count, latency, memory, _ in rows:
            table.add_row(name, size, str(count), f"{latency:.3f}", f"{latency / base:.2f}", f"{memory:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
