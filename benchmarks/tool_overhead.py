"""Overhead of a gleekit tool call, per surface, over a direct ``GleePredictor.predict`` on the same image.

    python benchmarks/tool_overhead.py [--model nano] [--repeats 15] [--max-objects 20]

Segment with 8 category names on a 480x640 shapeworld scene. The direct call gets decoded pixels; the tool
calls name the image by handle (already decoded), so the difference is what the tools add: argument
validation, top-k, COCO RLE encoding, the pydantic result, JSON (OpenAI), the JSON-RPC round trip (MCP,
in-process client). Extra rows show a file path (PNG decode included) and an overlay. These machines are
noisy, so besides the medians of the interleaved calls the table gives each call's own overhead: its
total time minus the time the predictor took inside it (measured around ``predict``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import anyio.from_thread
import mcp
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from agents.core import GleeToolkit
from agents.langchain import glee_tools
from agents.mcp_server import build_server
from agents.openai import dispatch
from glee_core.structures import Categories
from train.data.shapeworld import CATEGORY_NAMES, generate_scene, scene_seed


class TimedPredictor:
    """Wraps a predictor and records how long each ``predict`` took."""

    def __init__(self, inner):
        self.inner, self.last = inner, 0.0

    def predict(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner.predict(*args, **kwargs)
        finally:
            self.last = time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nano")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--max-objects", type=int, default=20)
    args = parser.parse_args()

    image = np.asarray(Image.fromarray(generate_scene(scene_seed("test", 3), split="test").image).resize((640, 480)))
    names = list(CATEGORY_NAMES)
    with tempfile.TemporaryDirectory() as folder:
        Image.fromarray(image).save(Path(folder) / "scene.png")
        toolkit = GleeToolkit(model=args.model, allowed_roots=[folder])
        timed = toolkit.predictor = TimedPredictor(toolkit.predictor)
        handle = toolkit.detect(image="scene.png", categories=names).image
        call = {"image": handle, "categories": names, "min_score": 0.0, "max_objects": args.max_objects}
        segment = {tool.name: tool for tool in glee_tools(toolkit)}["segment"]
        with anyio.from_thread.start_blocking_portal() as portal, \
                portal.wrap_async_context_manager(mcp.Client(build_server(toolkit))) as client:
            runs = {
                "direct predictor.predict": lambda: timed.predict(image, Categories(names)),
                "core GleeToolkit.call": lambda: toolkit.call("segment", call),
                "OpenAI dispatch (JSON in/out)": lambda: dispatch(
                    {"id": "c", "function": {"name": "segment", "arguments": json.dumps(call)}}, toolkit),
                "langchain tool.invoke": lambda: segment.invoke(
                    {"name": "segment", "args": call, "id": "c", "type": "tool_call"}),
                "MCP call_tool (in-process)": lambda: portal.call(client.call_tool, "segment", call),
                "core, image as a PNG path": lambda: toolkit.call("segment", {**call, "image": "scene.png"}),
                "core, with overlay": lambda: toolkit.call("segment", {**call, "overlay": True}),
            }
            for run in runs.values():  # warm-up
                run()
            times: dict[str, list[float]] = {name: [] for name in runs}
            extra: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
                    extra[name].append(times[name][-1] - timed.last)
        toolkit.close()

    base = statistics.median(times["direct predictor.predict"])
    table = Table(title=f"tool-call overhead: {args.model}, 480x640, {len(names)} categories, "
                        f"{args.max_objects} objects with masks, median of {args.repeats}")
    for column in ("surface", "median ms", "vs direct", "own overhead ms", "overhead % of predict"):
        table.add_column(column, justify="right" if column != "surface" else "left")
    for name, values in times.items():
        median, own = statistics.median(values), statistics.median(extra[name])
        table.add_row(name, f"{median * 1000:.1f}", f"{median / base:.3f}x", f"{own * 1000:.1f}",
                      f"{100 * own / base:.1f} %")
    Console().print(table)


if __name__ == "__main__":
    main()
