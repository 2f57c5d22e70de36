"""Latency and peak memory against vocabulary size: 1, 80, 1,203 and 5,000 category names in one pass.

    python benchmarks/vocab_scale.py [--preset lite-r50] [--counts 1 80 1203 5000] [--repeats 3] [--threads 2]

Each count runs twice, each time in a fresh process (``benchmarks/glee_speed.py`` does the timing): text
encoded on every call, and with the vocabulary cache warm. The ratio column compares each row with the
80-name row of the same kind; the issue's goal is 1,203 names (cached) <= 1.3x 80 names (cached).
"""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from glee_speed import load_average, run_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="lite-r50")
    parser.add_argument("--counts", nargs="+", type=int, default=[1, 80, 1203, 5000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    settings = [f"{count}{kind}" for kind in ("", "-cached") for count in args.counts]
    results = {r["setting"]: r for r in run_settings(args.preset, settings, args.repeats, args.threads, args.device)}
    table = Table(title=f"vocabulary size, {args.preset}, random weights, {args.device}, {args.threads} threads "
                        f"({load_average()})")
    for column in ("names", "text", "median s", "peak RSS MB", "text encoder s", "early fusion s", "x vs 80 names"):
        table.add_column(column, justify="right")
    for kind, label in (("", "encoded per call"), ("-cached", "cached")):
        base = results.get(f"80{kind}")
        for count in args.counts:
            r = results[f"{count}{kind}"]
            table.add_row(f"{count:,}", label, f"{r['median_s']:.2f}", f"{r['peak_mb']:,.0f}",
                          f"{r['stages'].get('text encoder', 0.0):.2f}", f"{r['stages'].get('early fusion', 0.0):.2f}",
                          f"{r['median_s'] / base['median_s']:.2f}" if base else "-")
    Console(width=150).print(table)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"load": load_average(), "results": list(results.values())}, handle, indent=2)


if __name__ == "__main__":
    main()
