"""Peak memory and speed of online tracking over long synthetic streams: memory must stay flat.

    python benchmarks/video_memory.py [--lengths 100 1000 5000] [--model nano] [--input-size 128]

Each length runs in its own process (so peak RSS is that run's own) on an endless shapeworld stream: a
48-frame held-out clip played forwards and backwards with a growing horizontal shift, so objects keep
moving, leaving and coming back. ``GleePredictor.stream`` consumes it frame by frame and only the
per-frame track counts are kept. ``--input-size`` shrinks the model input (the short side) to make long
runs affordable on a CPU; the tracker state does not depend on it. Prints frames/s, peak RSS and the
ratio of each peak to the first length's.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np


def endless_stream(length: int):
    from train.data.shapeworld.scene import scene_seed
    from train.data.shapeworld.video import VideoConfig, generate_video

    clip = [f.image for f in generate_video(scene_seed("test", 0), VideoConfig(num_frames=48), split="test").frames]
    cycle = clip + clip[::-1]
    for t in range(length):
        shift = (t // len(cycle)) * 17 % clip[0].shape[1]
        yield np.roll(cycle[t % len(cycle)], shift, axis=1)


def run_one(length: int, model: str, input_size: int) -> dict:
    import torch

    from glee_core.predictor import GleePredictor
    from glee_core.structures import Categories
    from train.data.shapeworld import CATEGORY_NAMES

    torch.set_num_threads(2)
    predictor = GleePredictor.from_pretrained(model)
    spec = predictor.model.config.input
    predictor.model.config.input = replace(spec, min_size=input_size, max_size=max(input_size, spec.max_size))
    start = time.perf_counter()
    ids, live = 0, 0
    stream = predictor.stream(endless_stream(length), Categories(list(CATEGORY_NAMES)), score_threshold=0.2)
    for detections in stream:
        ids = max(ids, int(detections.track_ids.max(initial=0)))
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"frames": length, "fps": length / seconds, "peak_mib": peak_mib, "track_ids": ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--model", default="nano")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.model, args.input_size)))
        return

    from rich.console import Console
    from rich.table import Table

    rows = []
    for length in args.lengths:
        output = subprocess.run([sys.executable, __file__, "--child", str(length), "--model", args.model,
                                 "--input-size", str(args.input_size)], check=True, capture_output=True, text=True)
        rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
    table = Table(title=f"online tracking memory: {args.model}, input short side {args.input_size}, "
                        "8 categories, score >= 0.2")
    for column in ("frames", "frames/s", "peak RSS MiB", "vs first", "track ids issued"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["frames"]), f"{row['fps']:.1f}", f"{row['peak_mib']:.0f}",
                      f"{row['peak_mib'] / rows[0]['peak_mib']:.3f}x", str(row["track_ids"]))
    Console().print(table)


if __name__ == "__main__":
    main()
