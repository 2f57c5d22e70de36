"""Training the referring head: samples from a frozen model, fitting, attaching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glee_core import processing
from glee_core.config import ReferringHeadConfig
from glee_core.modeling.glee import GleeModel
from glee_core.modeling.referring_head import EXTRA_FEATURES, ReferringHead
from glee_core.structures import Expression
from train.glee.referring_head import (ReferringSamples, attach_head, collect_samples, evaluate_head,
                                       glee_choice_accuracy, new_head, train_head)

SMALL = ReferringHeadConfig(dim=32, layers=1, heads=2)


@pytest.fixture(scope="module")
def nano() -> GleeModel:
    return GleeModel.from_pretrained("nano").float().eval()


@pytest.fixture(scope="module")
def samples(nano) -> ReferringSamples:
    return collect_samples(nano, 2, split="val", seed=3, positives_per_scene=3, negatives_per_scene=2,
                           progress=False)


def test_samples_hold_each_expressions_inputs_and_right_choices(nano, samples):
    queries = nano.config.decoder["num_queries"]
    assert len(samples) == 10
    assert samples.queries.shape == (10, queries, nano.config.hidden_dim + EXTRA_FEATURES)
    assert samples.text.shape[:2] == samples.text_valid.shape and samples.text_valid[:, 0].all()
    assert samples.positives.shape == (10, queries + 1)
    negative = samples.is_negative
    assert int(negative.sum()) == 4 and all(samples.kinds[i] in ("absent combination", "relation fails", "between "
                                                                 "fails", "too few", "absent attribute")
                                            for i in np.flatnonzero(negative.numpy()))
    assert samples.positives[negative, 0].all() and not samples.positives[negative, 1:].any()
    # the nano model localises these referents: some query hits each, and then "none" is not right
    assert samples.positives[~negative, 1:].any(1).all() and not samples.positives[~negative, 0].any()


def test_samples_are_the_inputs_the_model_gives_its_head(nano, samples):
    """What training sees is what inference computes: a head attached to the model scores a sample's expression
    exactly as it scores the collected inputs."""
    from train.data.shapeworld import generate_scene, referring_expressions, scene_seed

    torch.manual_seed(0)
    head = new_head(nano, SMALL).eval()
    model = attach_head(GleeModel.from_pretrained("nano").float().eval(), head, SMALL)
    scene = generate_scene(scene_seed("val", 0, 3), split="val")
    rng = np.random.default_rng([scene.seed, 23])
    found = referring_expressions(scene, rng)
    first = found[int(rng.permutation(len(found))[0])]
    batch = processing.preprocess([scene.image], model.config.input)
    with torch.no_grad():
        out = model(batch.tensor, expressions=[Expression(first.text).normalized])
        expected = head(samples.queries[:1], samples.text[:1], samples.text_valid[:1])
    assert torch.allclose(out.referring_choices, expected, atol=1e-4)
    assert samples.kinds[0] == first.kind


def test_samples_save_load_concatenate_and_subset(samples, tmp_path):
    samples.save(tmp_path / "s.pt")
    loaded = ReferringSamples.load(tmp_path / "s.pt")
    assert loaded.kinds == samples.kinds and torch.equal(loaded.queries, samples.queries)
    short = samples.subset(slice(0, 3))
    short = ReferringSamples(short.queries, short.text[:, :2], short.text_valid[:, :2], short.positives,
                             short.is_negative, short.kinds)
    both = ReferringSamples.concatenate([short, samples])
    length = samples.text.shape[1]
    assert len(both) == 13 and both.text.shape[1] == length
    assert torch.equal(both.text[:3, :2], short.text) and not both.text_valid[:3, 2:].any()
    assert (both.text[:3, 2:] == 0).all() and both.kinds[3:] == samples.kinds


def _toy(count: int, seed: int) -> ReferringSamples:
    """A task the head can only solve by reading the text: the right query is the one whose first feature is
    largest when the text says "max", smallest when it says "min"; "none" when the text says "none"."""
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(count, 6, 8 + EXTRA_FEATURES, generator=g)
    word = torch.randint(3, (count,), generator=g)
    text = torch.zeros(count, 2, 4)
    text[torch.arange(count), 0, word] = 1.0
    positives = torch.zeros(count, 7, dtype=torch.bool)
    target = torch.where(word == 0, queries[..., 0].argmax(1) + 1, queries[..., 0].argmin(1) + 1)
    target[word == 2] = 0
    positives[torch.arange(count), target] = True
    return ReferringSamples(queries, text, torch.tensor([[True, False]]).expand(count, 2).clone(), positives,
                            word == 2, ["toy"] * count)


def test_training_learns_a_task_that_needs_the_text():
    torch.manual_seed(0)
    head = ReferringHead(8, 4, SMALL)
    held_out = _toy(300, seed=1)
    before = evaluate_head(head, held_out)
    history = train_head(head, _toy(2000, seed=0), steps=600, batch_size=64, lr=3e-3, held_out=held_out,
                         eval_every=150, progress=False)
    assert [h["step"] for h in history] == [150, 300, 450, 600]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    after = evaluate_head(head, held_out)
    assert after["positives"] > 0.8 and after["negatives"] > 0.9 and after["loss"] < before["loss"] / 2
    assert after["positives"] > before["positives"] + 0.4
    assert after["positives, best query"] >= after["positives"]  # "none" aside, a query can only be right more often


def test_attached_head_saves_with_the_model(nano, tmp_path):
    model = attach_head(GleeModel.from_pretrained("nano").float(), new_head(nano, SMALL), SMALL)
    model.save_pretrained(tmp_path)
    loaded = GleeModel.from_pretrained(tmp_path)
    assert loaded.config.referring_head == SMALL
    assert torch.equal(loaded.referring_head.score.weight, model.referring_head.score.weight)


def test_bad_settings_are_refused(nano):
    with pytest.raises(ValueError, match="num_scenes must be >= 1"):
        collect_samples(nano, 0)
    with pytest.raises(ValueError, match="steps and batch_size"):
        train_head(ReferringHead(8, 4, SMALL), _toy(10, 0), steps=0)


def test_cli_trains_attaches_and_reports(samples, tmp_path):
    from typer.testing import CliRunner

    from gleekit.cli import app

    samples.save(tmp_path / "train.pt")
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", "referring-head", "--out", str(out), "--samples",
                                      str(tmp_path / "train.pt"), "--val-scenes", "1", "--steps", "3", "--dim", "16",
                                      "--layers", "1", "--heads", "2", "--half", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained on 10 expressions, 3 steps" in result.output and "right query on positives: GLEE's" in result.output
    loaded = GleeModel.from_pretrained(out)
    assert loaded.config.referring_head == ReferringHeadConfig(16, 1, 2, dropout=0.1)
    assert (out / "referring_head_curve.png").stat().st_size > 0
    result = CliRunner().invoke(app, ["train", "referring-head", "--out", str(tmp_path / "x"), "--samples",
                                      str(tmp_path / "train.pt"), "--dim", "30", "--heads", "4", "--no-progress"])
    assert result.exit_code == 1 and "must be a multiple of --heads" in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_glee_choice_accuracy_reads_glees_own_top_query(samples):
    column = samples.queries.shape[-1] - EXTRA_FEATURES + 4
    positive = ~samples.is_negative
    top = samples.queries[positive, :, column].argmax(-1) + 1
    expected = samples.positives[positive][torch.arange(int(positive.sum())), top].float().mean()
    assert glee_choice_accuracy(samples) == pytest.approx(float(expected))
    rigged = samples.subset(slice(None))
    rigged.queries[positive, :, column] = -10.0
    first = samples.positives[positive].float().argmax(-1) - 1  # a right query of each positive
    rigged.queries[positive.nonzero()[:, 0], first, column] = 10.0
    assert glee_choice_accuracy(rigged) == 1.0
