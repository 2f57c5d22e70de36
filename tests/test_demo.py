"""`gleekit demo`: the nano model on a held-out scene; overlays and JSON land in the output folder and the
answers sit on the right objects."""
from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from gleekit.cli import app


def test_demo_writes_overlays_and_right_answers(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("scene", "categories", "expression", "point"):
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.size == (256, 256)
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["scene"]["split"] == "test"
    assert summary["expression"]["box_iou"] >= 0.5
    assert summary["point"]["mask_iou"] >= 0.5
    found = len(summary["categories"]["scores"])
    assert found >= len(summary["scene"]["objects"]) - 1
    assert "1. categories" in result.output and "2. expression" in result.output and "3. point" in result.output
