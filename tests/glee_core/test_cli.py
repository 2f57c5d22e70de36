"""The ``gleekit`` command: convert the tiny official weights, predict with them, and the error paths."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from gleekit.cli import app
from tests.conftest import CASES_DIR, REFERENCE_DIR, load_case, require_reference

IMAGE = CASES_DIR / "a_category_det" / "image.png"
runner = CliRunner()


def _text(result) -> str:
    """The command's output on one line, without rich's box drawing."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("cli") / "tiny"
    result = runner.invoke(app, ["convert", str(REFERENCE_DIR / "weights.safetensors"), str(out), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert "(all weights loaded)" in result.output
    return out


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("predict", "convert", "parity", "demo", "finetune", "train", "data", "eval", "export", "vocab",
                    "tune-vocab"):
        assert re.search(rf"\b{command}\b", result.output), command


def test_convert_writes_the_official_weights(model_dir):
    assert json.loads((model_dir / "config.json").read_text())["preset"] == "tiny"
    ours = load_file(str(model_dir / "model.safetensors"))
    official = load_file(str(REFERENCE_DIR / "weights.safetensors"))
    assert set(ours) == {k.removeprefix("glee.") for k in official if k.startswith("glee.")}
    for name, tensor in official.items():
        if name.startswith("glee."):
            assert torch.equal(ours[name.removeprefix("glee.")], tensor.float()), name


def test_predict_categories_writes_json_and_overlay(model_dir, tmp_path):
    result = runner.invoke(app, ["predict", str(IMAGE), "--categories", "red square,blue ellipse,green rectangle",
                                 "--model", str(model_dir), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "100 detections in image.png" in result.output
    data = json.loads((tmp_path / "image.json").read_text())
    assert data["label_names"] == ["red square", "blue ellipse", "green rectangle"]
    assert data["image_size"] == [128, 160]
    assert len(data["boxes"]) == len(data["scores"]) == len(data["labels"]) == 100  # top-100 of 40 queries x 3
    assert all(len(box) == 4 for box in data["boxes"])
    assert set(data["labels"]) <= {0, 1, 2}
    assert data["scores"] == sorted(data["scores"], reverse=True)
    overlay = np.asarray(Image.open(tmp_path / "image_overlay.png").convert("RGB"))
    original = np.asarray(Image.open(IMAGE).convert("RGB"))
    assert overlay.shape == original.shape
    assert (overlay != original).any()


def test_predict_matches_the_official_detections(model_dir, tmp_path):
    case = load_case("a_category_det")
    categories = ",".join(case.meta["prompts"]["categories"])
    result = runner.invoke(app, ["predict", str(IMAGE), "--categories", categories, "--model", str(model_dir),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "image.json").read_text())
    ours = {(q, k): (s, b) for q, k, s, b in zip(data["query_index"], data["labels"], data["scores"], data["boxes"])}
    post = case.post
    assert len(ours) == len(post["scores.0"]) == 100
    for q, k, score, box in zip(post["query_index.0"], post["labels.0"], post["scores.0"], post["boxes.0"]):
        got_score, got_box = ours[(int(q), int(k))]
        assert abs(got_score - float(score)) <= 1e-4
        np.testing.assert_allclose(got_box, box, atol=1e-4 * max(1.0, float(np.abs(post["boxes.0"]).max())))


def test_predict_refuses_two_prompts(model_dir, tmp_path):
    result = runner.invoke(app, ["predict", str(IMAGE), "--categories", "cat", "--expression", "the cat",
                                 "--model", str(model_dir), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "give exactly one of --categories, --expression, --box, --point, --caption" in _text(result)


@pytest.mark.parametrize("option, value", [("--box", "1,2,3"), ("--box", "1,2,x,4"), ("--point", "5")])
def test_predict_refuses_bad_numbers(model_dir, tmp_path, option, value):
    result = runner.invoke(app, ["predict", str(IMAGE), option, value, "--model", str(model_dir),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2
    count = 4 if option == "--box" else 2
    assert f"{option} must be {count} comma-separated numbers, got '{value}'" in _text(result)


def test_missing_files_are_usage_errors(model_dir, tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path / "nope.png"), "--categories", "cat",
                                 "--model", str(model_dir)])
    assert result.exit_code == 2 and "does not exist" in _text(result)
    result = runner.invoke(app, ["convert", str(tmp_path / "nope.pth"), str(tmp_path / "out"), "--preset", "tiny"])
    assert result.exit_code == 2 and "does not exist" in _text(result)


def test_convert_errors_are_one_line(tmp_path):
    weights = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(1)}, weights)
    weights = str(weights)
    result = runner.invoke(app, ["convert", weights, str(tmp_path), "--preset", "huge"])
    assert result.exit_code == 1
    assert "Error: unknown preset 'huge'" in _text(result)
    bad = tmp_path / "pickled.pth"
    torch.save({"model": {"glee.w": torch.zeros(1)}, "extra": Image.new("RGB", (1, 1))}, bad)
    result = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out"), "--preset", "tiny"])
    assert result.exit_code == 1
    assert "weights-only" in _text(result)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--categories", "cat,,dog"], "Error: category name 1 must be a non-empty string, got ''"),
    (["--expression", "?!"], "has no words left after removing punctuation"),
    (["--categories", "cat", "--model", "no/such/model"], "Error: 'no/such/model' is neither a model folder"),
], ids=["empty-category", "punctuation-only", "no-model"])
def test_predict_user_errors_are_one_line(model_dir, tmp_path, args, message):
    if "--model" not in args:
        args = [*args, "--model", str(model_dir)]
    result = runner.invoke(app, ["predict", str(IMAGE), *args, "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert message in _text(result)
    assert not any(tmp_path.iterdir())


def test_predict_caption_labels_phrases_with_their_spans(model_dir, tmp_path):
    result = runner.invoke(app, ["predict", str(IMAGE), "--caption", "a red square next to two blue ellipses",
                                 "--model", str(model_dir), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "image.json").read_text())
    assert data["label_names"] == ["red square", "two blue ellipses"]
    assert "red square [2:12]" in _text(result) or "two blue ellipses [21:38]" in _text(result)


def test_vocab_encode_then_predict_with_the_file(model_dir, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("red square\nblue ellipse\n\ngreen rectangle\n")
    vocab = tmp_path / "v.safetensors"
    result = runner.invoke(app, ["vocab", "encode", f"@{names}", "--model", str(model_dir), "--out", str(vocab)])
    assert result.exit_code == 0, result.output
    assert "3 names" in result.output
    by_file = runner.invoke(app, ["predict", str(IMAGE), "--vocabulary", str(vocab), "--model", str(model_dir),
                                  "--out", str(tmp_path / "a")])
    by_names = runner.invoke(app, ["predict", str(IMAGE), "--categories", "red square,blue ellipse,green rectangle",
                                   "--model", str(model_dir), "--out", str(tmp_path / "b")])
    assert by_file.exit_code == by_names.exit_code == 0, by_file.output
    assert (json.loads((tmp_path / "a" / "image.json").read_text())
            == json.loads((tmp_path / "b" / "image.json").read_text()))
    other = runner.invoke(app, ["predict", str(IMAGE), "--vocabulary", str(vocab), "--model", "nano",
                                "--out", str(tmp_path / "c")])
    assert other.exit_code == 1 and "another text tower" in _text(other)
    duplicate = runner.invoke(app, ["vocab", "encode", "cat,Cat", "--model", str(model_dir), "--out", str(vocab)])
    assert duplicate.exit_code == 1 and "duplicate category name" in _text(duplicate)
