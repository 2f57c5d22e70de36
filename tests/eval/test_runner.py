"""The benchmark runner: sample order, limits, empty splits, and data-parallel runs over 2 CPU processes
(``accelerate launch``) that give exactly the numbers of one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from eval.runner import Benchmark, EvalResult, run_benchmark
from gleekit.cli import app
from train.data.shapeworld.export import write_shapeworld


class Squares(Benchmark):
    name = "squares"

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def run_sample(self, model, index):
        return index * index

    def score(self, records):
        return EvalResult({"sum": float(sum(records))}, {"samples": len(records)}, [("sum", float(sum(records)))])


def test_records_come_back_in_sample_order_and_limit_applies():
    records, result = run_benchmark(Squares(5), model=None, progress=False)
    assert records == [0, 1, 4, 9, 16] and result.metrics["sum"] == 30.0
    records, _ = run_benchmark(Squares(5), model=None, limit=2, progress=False)
    assert records == [0, 1]


def test_empty_benchmark_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        run_benchmark(Squares(0), model=None)


def test_two_processes_give_the_numbers_of_one(tmp_path):
    write_shapeworld(tmp_path / "data", "referring", "test", 2, seed=5, progress=False)
    refcoco_dir = tmp_path / "data" / "refcoco"
    (tmp_path / "data" / "shapeworld").rename(refcoco_dir)
    common = ["eval", "refcoco", "--data-root", str(tmp_path / "data"), "--split", "test",
              "--image-root", str(tmp_path / "data" / "images" / "shapeworld")]
    single = CliRunner().invoke(app, common + ["--json-out", str(tmp_path / "one.json")])
    assert single.exit_code == 0, single.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
         "-m", "gleekit.cli", *common, "--json-out", str(tmp_path / "two.json")],
        capture_output=True, text=True, env=env, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["counts"]["sentences"] > 5 and one["metrics"] == two["metrics"] and one["counts"] == two["counts"]
    assert launched.stdout.count("REC Acc@0.5") == 1  # only the main process reports
