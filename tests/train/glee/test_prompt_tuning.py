"""Prompt tuning (`train/glee/prompt_tuning.py`, `gleekit tune-vocab`): the nano model learns a category it has never
seen by name — shapeworld's stars, labelled "blicket" — by tuning only its vocabulary tensors."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from glee_core.modeling.glee import GleeModel
from glee_core.predictor import GleePredictor
from glee_core.vocabulary import Vocabulary, VocabularyMismatchError
from gleekit.cli import app
from train.data.shapeworld.export import write_shapeworld
from train.glee.prompt_tuning import evaluate_vocabulary, tune_vocabulary, vocabulary_loss

NEW = "blicket"


@dataclass
class Split:
    json: Path
    images: Path


def blicket_split(root: Path, split: str, n: int, seed: int, keep: int | None = None) -> Split:
    """Shapeworld detection scenes whose only category is the star, renamed blicket (other shapes unlabelled);
    ``keep``: only the first images (of scenes already written under ``root``)."""
    path = root / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        write_shapeworld(root, "detection", split, n, seed, progress=False)
    coco = json.loads(path.read_text())
    star = next(c["id"] for c in coco["categories"] if c["name"] == "star")
    coco["categories"] = [{"id": star, "name": NEW}]
    coco["images"] = coco["images"][:keep]
    kept = {image["id"] for image in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] == star and a["image_id"] in kept]
    out = root / f"{NEW}_{split}_{keep}.json"
    out.write_text(json.dumps(coco))
    return Split(out, root / split)


@dataclass
class Tuned:
    model: GleeModel
    train: Split
    small: Split
    test: Split
    state: dict[str, torch.Tensor]
    start: Vocabulary
    vocabulary: Vocabulary
    history: list[tuple[int, float]]
    ap50: tuple[float, float]
    loss: tuple[float, float]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Tuned:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("blicket")
    train = blicket_split(root / "train", "train", 32, seed=7)
    small = blicket_split(root / "train", "train", 32, seed=7, keep=4)
    test = blicket_split(root / "test", "test", 100, seed=2026)  # held out: another split, never trained on
    model = GleeModel.from_pretrained("nano")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        start = model.encode_vocabulary([NEW])
    before = evaluate_vocabulary(model, start, test.json, test.images)[NEW]
    loss_before = vocabulary_loss(model, start, train.json, train.images, batch_size=2, num_points=256)
    vocabulary, history = tune_vocabulary(model, train.json, train.images, steps=48, lr=0.05, batch_size=2,
                                          num_points=256, seed=0, progress=False)
    after = evaluate_vocabulary(model, vocabulary, test.json, test.images)[NEW]
    loss_after = vocabulary_loss(model, vocabulary, train.json, train.images, batch_size=2, num_points=256)
    return Tuned(model, train, small, test, state, start, vocabulary, history, (before, after),
                 (loss_before, loss_after))


def test_a_never_seen_name_is_learnt_from_a_few_images(tuned):
    before, after = tuned.ap50
    # measured (nano stage 13): box AP50 of "blicket" on the 100 held-out scenes 0.115 before, 0.909 after 48 steps
    # of 2 images (32 tuning images); after 150 steps of 4 on 50 images: 0.934 (stage 12: 0.118 -> 0.881 / 0.918,
    # stage 11: 0.128 -> 0.845 / 0.880, stage 10: 0.155 -> 0.845 / 0.892, stage 7: 0.152 -> 0.659 / 0.706).
    # The goal: from <= 0.3 to >= 0.8 with <= 50 images. Fewer held-out scenes are too noisy to measure it
    # (stage 5 on 40 scenes: 0.311 -> 0.26-0.28).
    assert before <= 0.3 and after >= 0.8, (before, after)
    assert len(tuned.history) == 48 and all(step == i + 1 for i, (step, _) in enumerate(tuned.history))
    loss_before, loss_after = tuned.loss  # the loss on the tuning images, same batches, before vs after
    assert loss_after < 0.95 * loss_before, tuned.loss


def test_only_the_vocabulary_changes(tuned):
    model, vocabulary = tuned.model, tuned.vocabulary
    state = model.state_dict()
    assert state.keys() == tuned.state.keys()
    assert all(torch.equal(state[k], tuned.state[k]) for k in state), "prompt tuning changed the model"
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())
    assert not model.training  # from_pretrained's eval mode is restored
    assert vocabulary.names == (NEW,) and vocabulary.fingerprint == model.text_fingerprint()
    assert vocabulary.class_embeddings.shape == tuned.start.class_embeddings.shape
    assert vocabulary.fusion_tokens.shape == tuned.start.fusion_tokens.shape
    assert not torch.equal(vocabulary.class_embeddings, tuned.start.class_embeddings)
    assert not torch.equal(vocabulary.fusion_tokens, tuned.start.fusion_tokens)


def test_tuning_is_deterministic_and_keeps_other_names(tuned):
    small = tuned.small
    names = ["circle", NEW]  # circle: in the vocabulary, not labelled in the data -> kept fixed by default
    runs = [tune_vocabulary(tuned.model, small.json, small.images, names, steps=1, batch_size=2, num_points=64,
                            seed=3, progress=False).vocabulary for _ in range(2)]
    assert torch.equal(runs[0].class_embeddings, runs[1].class_embeddings)
    assert torch.equal(runs[0].fusion_tokens, runs[1].fusion_tokens)
    with torch.no_grad():
        start = tuned.model.encode_vocabulary(names)
    circle_tokens = 3  # BOS circle EOS, first in the fused sequence
    assert torch.equal(runs[0].class_embeddings[0], start.class_embeddings[0])
    assert torch.equal(runs[0].fusion_tokens[:circle_tokens], start.fusion_tokens[:circle_tokens])
    assert not torch.equal(runs[0].class_embeddings[1], start.class_embeddings[1])
    assert not torch.equal(runs[0].fusion_tokens[circle_tokens:], start.fusion_tokens[circle_tokens:])


def test_saved_vocabulary_runs_on_its_model_only(tuned, tmp_path):
    path = tuned.vocabulary.save(tmp_path / "blicket.safetensors")
    assert path.stat().st_size < 64 * 1024
    loaded = Vocabulary.load(path)
    assert loaded.names == tuned.vocabulary.names and loaded.fingerprint == tuned.vocabulary.fingerprint
    assert torch.equal(loaded.class_embeddings, tuned.vocabulary.class_embeddings)
    assert torch.equal(loaded.fusion_tokens, tuned.vocabulary.fusion_tokens)
    image = GleePredictor.load_image(next(tuned.test.images.iterdir()))
    dets = GleePredictor(tuned.model).predict(image, loaded)
    assert len(dets) > 0 and dets.label_names == [NEW]

    other = GleeModel.from_config("tiny")  # another (random) model
    with pytest.raises(VocabularyMismatchError, match="another text tower"):
        GleePredictor(other).predict(image, loaded)
    with pytest.raises(VocabularyMismatchError, match="another text tower"):
        tune_vocabulary(other, tuned.small.json, tuned.small.images, loaded, steps=1, progress=False)


def test_bad_inputs_give_clear_errors(tuned, tmp_path):
    model, small = tuned.model, tuned.small
    with pytest.raises(ValueError, match="steps must be >= 1"):
        tune_vocabulary(model, small.json, small.images, steps=0, progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        tune_vocabulary(model, small.json, small.images, batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"categories \['blicket'\] are not in the vocabulary \['star'\]"):
        tune_vocabulary(model, small.json, small.images, ["star"], steps=1, progress=False)
    with pytest.raises(ValueError, match="tune must name some of the vocabulary's names"):
        tune_vocabulary(model, small.json, small.images, tune=["wug"], steps=1, progress=False)

    coco = json.loads(small.json.read_text())
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**coco, "images": [], "annotations": []}))
    with pytest.raises(ValueError, match="has no images"):
        tune_vocabulary(model, empty, small.images, steps=1, progress=False)
    unlabelled = tmp_path / "unlabelled.json"
    unlabelled.write_text(json.dumps({**coco, "annotations": []}))
    with pytest.raises(ValueError, match="no .*annotation"):
        tune_vocabulary(model, unlabelled, small.images, steps=1, progress=False)


def test_cli_tunes_saves_and_reports(tuned, tmp_path):
    small, out = tuned.small, tmp_path / "v.safetensors"
    runner = CliRunner()
    result = runner.invoke(app, ["tune-vocab", "--data", str(small.json), "--images", str(small.images), "--model",
                                 "nano", "--out", str(out), "--steps", "1", "--batch-size", "2", "--no-progress",
                                 "--curve", str(tmp_path / "curve.png")])
    assert result.exit_code == 0, result.output
    assert "tuned the vocabulary of 1 names in 1 steps" in result.output and str(out) in result.output
    assert Vocabulary.load(out).names == (NEW,) and (tmp_path / "curve.png").stat().st_size > 0

    tuned_elsewhere = Vocabulary(("blicket",), torch.zeros(1, 8), torch.zeros(3, 8), "0" * 64)
    tuned_elsewhere.save(tmp_path / "other.safetensors")
    result = runner.invoke(app, ["tune-vocab", "--data", str(small.json), "--images", str(small.images), "--out",
                                 str(tmp_path / "x.safetensors"), "--vocabulary", str(tmp_path / "other.safetensors"),
                                 "--no-progress"])
    assert result.exit_code == 1 and "another text tower" in result.output, result.output
    result = runner.invoke(app, ["tune-vocab", "--data", str(small.json), "--images", str(small.images), "--out",
                                 str(tmp_path / "x.safetensors"), "--steps", "0", "--no-progress"])
    assert result.exit_code == 1 and "steps must be >= 1" in result.output, result.output
    assert not (tmp_path / "x.safetensors").exists()
