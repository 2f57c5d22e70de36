"""Latency of the exported ONNX image path in onnxruntime (CPU) beside PyTorch's, random weights.

    python benchmarks/onnx_speed.py [--presets tiny lite-r50] [--categories 80] [--repeats 5] [--threads 1]

Each preset is exported at the padded size of a VGA photo at the preset's test resize (tiny 128x192,
lite-r50 800x1088), then the same normalised input and an encoded vocabulary of K names go through
PyTorch (``CategoryImagePath``, no_grad, the default CPU kernels) and through onnxruntime. Times are the
model only (no pre/post-processing), one image, median of ``--repeats`` runs after one warm-up. Prints a
table: preset, input size, K, median s/image of each, the PyTorch/ONNX ratio and the largest
|ONNX - PyTorch| over the outputs.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from glee_core import processing
from glee_core.modeling.glee import GleeModel
from glee_core.onnx_export import CategoryImagePath, OnnxGlee, export_onnx

IMAGE_HW = (480, 640)


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(preset: str, count: int, repeats: int, threads: int, folder: Path) -> tuple:
    torch.manual_seed(0)
    model = GleeModel.from_config(preset).eval()
    images = processing.preprocess([np.zeros((*IMAGE_HW, 3), np.uint8)], model.config.input).tensor
    images = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    height, width = images.shape[-2:]
    runner = OnnxGlee(export_onnx(model, folder / f"{preset}.onnx", height=height, width=width), threads=threads)
    with torch.no_grad():
        vocab = model.encode_vocabulary([f"category number {i}" for i in range(count)])
        wrapper = CategoryImagePath(model)
        expected = wrapper(images, vocab.class_embeddings, vocab.fusion_tokens)
        torch_s = _median_seconds(lambda: wrapper(images, vocab.class_embeddings, vocab.fusion_tokens), repeats)
    got = runner.run(images, vocab.class_embeddings, vocab.fusion_tokens)
    onnx_s = _median_seconds(lambda: runner.run(images, vocab.class_embeddings, vocab.fusion_tokens), repeats)
    error = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    return preset, f"{height}x{width}", count, torch_s, onnx_s, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "lite-r50"])
    parser.add_argument("--categories", type=int, default=80, help="K, the number of category names")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads (0: their defaults)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = Table(title=f"GLEE image path, PyTorch vs onnxruntime (CPU), random weights, 1 image, "
                        f"{torch.get_num_threads()} torch threads")
    for column in ("preset", "input HxW", "K", "PyTorch s/image", "ONNX s/image", "PyTorch / ONNX", "max |Δ|"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.presets:
            name, size, count, torch_s, onnx_s, error = bench(preset, args.categories, args.repeats, args.threads,
                                                              Path(folder))
            table.add_row(name, size, str(count), f"{torch_s:.3f}", f"{onnx_s:.3f}", f"{torch_s / onnx_s:.2f}×",
                          f"{error:.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()
