"""``gleekit ask``: answer printed, JSON and overlays written; bad models end with a one-line error."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from gleekit.cli import app
from mllm.io import save_gleellm


def test_ask_writes_the_answer_json(model, tmp_path):
    folder = save_gleellm(model, tmp_path / "m")
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    result = CliRunner().invoke(app, ["ask", str(image), "Please segment the red circle.", "--model", str(folder),
                                      "--out", str(tmp_path / "out"), "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "Answer:" in result.output
    data = json.loads((tmp_path / "out" / "scene_answer.json").read_text())
    assert data["question"] == "Please segment the red circle." and len(data["segments"]) == data["answer"].count("[SEG]")


def test_ask_takes_a_mask_source_and_names_a_bad_one(model, tmp_path):
    folder = save_gleellm(model, tmp_path / "m")
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    args = ["ask", str(image), "Please segment the red circle.", "--model", str(folder), "--out", str(tmp_path / "o"),
            "--max-new-tokens", "4", "--mask-source"]
    assert CliRunner().invoke(app, [*args, "pointer"]).exit_code == 0
    result = CliRunner().invoke(app, [*args, "sam"])
    assert result.exit_code == 1 and "mask_source must be one of ['glee', 'pointer'], got 'sam'" in result.output


def test_ask_with_a_folder_that_is_not_a_model(tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    result = CliRunner().invoke(app, ["ask", str(image), "hi", "--model", str(tmp_path)])
    assert result.exit_code == 1 and "not a GleeLLM folder" in result.output
