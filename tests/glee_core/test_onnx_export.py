"""ONNX export of the image path: onnxruntime on CPU matches PyTorch (tiny preset, random weights), the
vocabulary axes are dynamic, the runner's post-processing equals GleePredictor's, and the error paths."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from glee_core.modeling.glee import GleeModel
from glee_core.onnx_export import (
    OUTPUT_NAMES,
    CategoryImagePath,
    OnnxGlee,
    export_onnx,
    max_abs_errors,
    require,
    sidecar_path,
)
from glee_core.predictor import GleePredictor
from glee_core.vocabulary import VocabularyMismatchError
from gleekit.cli import app

SIZE = (128, 224)  # tiny's test resize of a 128x224 image: no extra padding, so GleePredictor sees the same input
NAMES = ["red circle", "blue square"]
TOLERANCE = 1e-3  # observed: < 1e-5 on every output (pred_masks ~6e-6, pred_logits ~2e-6)


@pytest.fixture(scope="module")
def model() -> GleeModel:
    torch.manual_seed(0)
    return GleeModel.from_config("tiny").eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """``gleekit export onnx`` of the tiny model (saved to a folder) -> (the .onnx path, the CLI result)."""
    folder = tmp_path_factory.mktemp("onnx")
    model.save_pretrained(folder / "tiny")
    out = folder / "tiny.onnx"
    result = CliRunner().invoke(app, ["export", "onnx", "--model", str(folder / "tiny"), "--out", str(out),
                                      "--height", str(SIZE[0]), "--width", str(SIZE[1])])
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="module")
def runner(exported) -> OnnxGlee:
    return OnnxGlee(exported[0], threads=1)


def _vocabulary(model, names):
    with torch.no_grad():
        return model.encode_vocabulary(names)


def test_sidecar_describes_the_export(model, runner):
    meta = runner.metadata
    assert meta["preset"] == "tiny" and meta["image_size"] == list(SIZE)
    assert meta["inputs"] == ["images", "class_embeddings", "fusion_tokens"]
    assert meta["text_fingerprint"] == model.text_fingerprint()
    assert runner.config.to_dict() == model.config.to_dict()


def test_wrapper_equals_the_model_forward(model):
    vocab = _vocabulary(model, NAMES)
    images = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        ours = CategoryImagePath(model)(images, vocab.class_embeddings, vocab.fusion_tokens)
        official = model(images, categories=vocab)
    expected = (official.pred_logits, official.pred_boxes, official.pred_masks, official.pred_scores,
                official.query_embeds)
    for name, a, b in zip(OUTPUT_NAMES, ours, expected):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("names, batch", [
    (NAMES, 1),  # K = 2, as exported
    (["a", "person riding a red bicycle", "dog", "cat", "traffic light"], 2),  # other K and T; a batch, run one by one
])
def test_onnxruntime_matches_pytorch(model, runner, names, batch):
    vocab = _vocabulary(model, names)
    errors = max_abs_errors(model, runner, vocab, batch=batch, seed=batch)
    assert max(errors.values()) < TOLERANCE, errors
    out = runner.run(np.zeros((batch, 3, *SIZE), np.float32), vocab.class_embeddings, vocab.fusion_tokens)
    queries = model.predictor.num_queries
    assert out.pred_logits.shape == (batch, queries, len(names))
    assert out.pred_masks.shape == (batch, queries, SIZE[0] // 4, SIZE[1] // 4)


def test_predict_equals_gleepredictor_on_an_image_of_the_exported_size(model, runner):
    vocab = _vocabulary(model, NAMES)
    image = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    ours = runner.predict(image, vocab, topk=10)
    expected = GleePredictor(model).predict(image, vocab, topk=10)
    np.testing.assert_allclose(ours.scores, expected.scores, atol=TOLERANCE)
    np.testing.assert_allclose(ours.boxes, expected.boxes, atol=TOLERANCE * max(SIZE))
    assert ours.label_names == NAMES and ours.masks.shape == expected.masks.shape


def test_predict_fits_other_image_shapes_into_the_exported_size(model, runner):
    vocab = _vocabulary(model, NAMES)
    rng = np.random.default_rng(1)
    portrait, small = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((300, 100), (40, 60)))
    batch = runner.preprocess([portrait, small])
    assert batch.padded_size == SIZE
    assert batch.image_sizes == [(128, 43), (128, 192)]  # portrait capped by H; small at tiny's min_size 128
    results = runner.predict([portrait, small], vocab, topk=5)
    assert [r.image_size for r in results] == [(300, 100), (40, 60)]
    assert all(len(r) == 5 and r.masks.shape[1:] == r.image_size for r in results)


def test_wrong_shapes_name_the_expected_shape(model, runner):
    vocab = _vocabulary(model, NAMES)
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 128, 224\]"):
        runner.run(np.zeros((1, 3, 128, 128), np.float32), vocab.class_embeddings, vocab.fusion_tokens)
    with pytest.raises(ValueError, match=r"class_embeddings must be \[categories, 256\]"):
        runner.run(np.zeros((1, 3, *SIZE), np.float32), vocab.class_embeddings[:, :8], vocab.fusion_tokens)
    with pytest.raises(ValueError, match=r"fusion_tokens must be \[tokens, 256\]"):
        runner.run(np.zeros((1, 3, *SIZE), np.float32), vocab.class_embeddings, vocab.fusion_tokens[None])
    with pytest.raises(ValueError, match="multiples of 32"):
        export_onnx(model, "unused.onnx", height=100, width=224)


def test_a_vocabulary_of_another_text_tower_is_refused(runner):
    torch.manual_seed(1)
    other = GleeModel.from_config("tiny").eval()
    with pytest.raises(VocabularyMismatchError):
        runner.predict(np.zeros((*SIZE, 3), np.uint8), _vocabulary(other, NAMES))


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_missing_dependency_names_the_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "gleekit\[onnx\]"'):
        require(module)


def test_cli_exports_and_verifies(exported, tmp_path):
    path, result = exported
    assert "max |onnxruntime - PyTorch|: pred_logits" in result.output
    assert json.loads(sidecar_path(path).read_text())["image_size"] == list(SIZE)
    bad = CliRunner().invoke(app, ["export", "onnx", "--model", str(path.parent / "tiny"), "--out",
                                   str(tmp_path / "x.onnx"), "--height", "100", "--no-verify"])
    assert bad.exit_code == 1 and "multiples of 32" in bad.output
