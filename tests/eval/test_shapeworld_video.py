"""Online tracking quality of the bundled nano model on held-out shapeworld videos, and the eval command.

The issue's targets (HOTA >= 0.8, IDF1 >= 0.9) are not met: nano's detections limit it (DetA), see the
issue notes. This test holds the measured figures (minus a tolerance) so that regressions show."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from eval.models import EvalModel
from eval.runner import run_benchmark
from eval.shapeworld_video import ShapeworldVideoBenchmark
from gleekit.cli import app
from glee_core.predictor import GleePredictor

TOLERANCE = 0.05
MEASURED = {"hota": 0.737, "idf1": 0.763, "idsw": 1}  # 3 test videos, seed 0, online, tracks start at score 0.25 and
# continue down to 0.2, with motion (nano stage 15; stage 14 with the earlier tracker, one threshold 0.2, no motion:
# HOTA 0.716 / IDF1 0.814 / 2 switches here, stage 13 0.683 / 0.776 / 4, stage 12 0.649 / 0.730, stage 11 0.665 /
# 0.750, stage 10 0.650 / 0.697, stage 7 0.666 / 0.742, stage 3 0.658 / 0.807; on 20 videos stage 15 scores HOTA
# 0.711, IDF1 0.781, 8 ID switches, stage 14 with the earlier tracker 0.674 / 0.754 / 18, stage 13 0.662 / 0.744 /
# 18, stage 12 0.658 / 0.733 / 20, stage 11 0.654 / 0.739, stage 10 0.649 / 0.728, stage 7 0.621 / 0.704)


def test_nano_tracks_held_out_videos():
    _, result = run_benchmark(ShapeworldVideoBenchmark(3),
                              EvalModel.wrap(GleePredictor.from_pretrained("nano")), progress=False)
    scores = result.metrics
    assert result.counts["frames"] == 36 and result.counts["true tracks"] > 0
    assert scores["HOTA"] >= MEASURED["hota"] - TOLERANCE and scores["IDF1"] >= MEASURED["idf1"] - TOLERANCE
    assert 0 <= scores["DetA"] <= 1 and 0 <= scores["AssA"] <= 1 and scores["IDSW"] <= 2 * MEASURED["idsw"] + 2


def test_eval_command_writes_json(tmp_path):
    out = tmp_path / "video.json"
    result = CliRunner().invoke(app, ["eval", "shapeworld-video", "--num-videos", "1", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["settings"]["mode"] == "online" and data["counts"]["frames"] == 12 and 0 <= data["metrics"]["HOTA"] <= 1
    assert "HOTA" in result.output and "IDF1" in result.output
