"""The GLEE trainer: the loss really falls, checkpoints resume exactly, reports are written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glee_core.modeling.glee import GleeModel
from train.glee.config import TrainConfig
from train.glee.samples import ShapeworldSource
from train.glee.trainer import GleeTrainer, StepSamples, build_model, dn_label_encoder, param_groups


class FixedScenes:
    """A source that cycles over the first ``n`` samples of another (an overfitting set)."""

    def __init__(self, source, n: int):
        self.samples = [source.sample(i) for i in range(n)]

    def sample(self, index: int):
        return self.samples[index % len(self.samples)]


def _config(tmp_path, **changes) -> TrainConfig:
    data = {"model": {"preset": "nano"}, "optim": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant"},
            "loss": {"num_points": 256}, "steps": 4, "batch_size": 2, "output_dir": str(tmp_path / "run"),
            "log_every": 1, "eval_every": 0, "checkpoint_every": 0}
    data.update(changes)
    return TrainConfig.from_dict(data)


@pytest.fixture(scope="module")
def scenes():
    return FixedScenes(ShapeworldSource(task_weights={"detection": 1.0, "referring": 1.0, "visual": 1.0}), 2)


def test_loss_falls_when_overfitting(tmp_path, scenes):
    torch.manual_seed(0)
    config = _config(tmp_path, steps=24, eval_every=24, val_batches=1)
    result = GleeTrainer(config, scenes, val_source=scenes).train()
    losses = [loss for _, loss in result.history["train"]]
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:3]), losses
    assert (result.output_dir / "loss_curve.png").stat().st_size > 1000
    history = json.loads((result.output_dir / "history.json").read_text())
    assert history["val"][0][0] == 24
    reloaded = GleeModel.from_pretrained(result.model_dir)
    assert reloaded.config.preset == "nano"


def test_resume_continues_exactly(tmp_path, scenes):
    straight = GleeTrainer(_config(tmp_path / "a"), scenes, model=_seeded_model()).train()
    first = GleeTrainer(_config(tmp_path / "b", steps=2), scenes, model=_seeded_model()).train()
    assert first.steps == 2
    resumed = GleeTrainer(_config(tmp_path / "b"), scenes, model=_seeded_model(seed=1)).train(resume=True)
    assert resumed.steps == 4
    a = GleeModel.from_pretrained(straight.model_dir).state_dict()
    b = GleeModel.from_pretrained(resumed.model_dir).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert [s for s, _ in resumed.history["train"]] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"other settings \(optim.lr 0.001 -> 0.002\)"):
        GleeTrainer(_config(tmp_path / "b", optim={"lr": 2e-3, "warmup_steps": 0, "schedule": "constant"}), scenes,
                    model=_seeded_model()).train(resume=True)


def test_a_non_finite_loss_stops_before_the_weights_change(tmp_path, scenes, monkeypatch):
    trainer = GleeTrainer(_config(tmp_path), scenes, model=_seeded_model())
    before = {k: v.detach().clone() for k, v in trainer.unwrapped.named_parameters()}
    real = trainer.batch_losses

    def nan_loss(batches, generator):
        losses = real(batches, generator)
        return {**losses, "loss": losses["loss"] * float("nan")}

    monkeypatch.setattr(trainer, "batch_losses", nan_loss)
    with pytest.raises(FloatingPointError, match="loss became nan at step 0; lower optim.lr"):
        trainer.train()
    assert all(torch.equal(before[k], v) for k, v in trainer.unwrapped.named_parameters())


def test_data_workers_make_the_same_samples(tmp_path):
    source = ShapeworldSource(task_weights={"detection": 1.0, "referring": 1.0, "visual": 1.0})
    inline = GleeTrainer(_config(tmp_path / "a"), source, model=_seeded_model())
    workers = GleeTrainer(_config(tmp_path / "b", num_workers=2), source, model=_seeded_model())
    expected, got = list(inline._sample_stream(3, 7)), list(workers._sample_stream(3, 7))
    assert len(got) == 4 and all(len(step) == 2 for step in got)
    for step_a, step_b in zip(expected, got):
        for a, b in zip(step_a, step_b):
            assert a.task == b.task and a.names == b.names
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.boxes, b.boxes)
    with pytest.raises(ValueError, match="num_workers"):
        GleeTrainer(_config(tmp_path / "c", num_workers=-1), source, model=_seeded_model())


def _seeded_model(seed: int = 0) -> GleeModel:
    torch.manual_seed(seed)
    return GleeModel.from_config("nano")


def test_freeze_and_param_groups(tmp_path):
    config = _config(tmp_path, model={"preset": "nano", "freeze": ["backbone", "text_encoder"]},
                     optim={"lr": 1e-3, "backbone_lr_mult": 0.1})
    model = build_model(config)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    groups = param_groups(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    predictor = model.predictor
    assert decay[id(predictor.coco_label_enc.weight)] == decay[id(model.pn_indicator.weight)] == 0.0  # nn.Embedding
    assert decay[id(predictor.decoder.layers[0].linear1.bias)] == 0.0
    level_embed = model.pixel_decoder.transformer.level_embed  # an nn.Parameter, decayed as in the official code
    assert decay[id(predictor.decoder.layers[0].linear1.weight)] == decay[id(level_embed)] == 0.05
    with pytest.raises(ValueError, match="no parameter starts with 'backbonez'"):
        build_model(_config(tmp_path, model={"preset": "nano", "freeze": ["backbonez"]}))


def test_dn_label_encoder_choice():
    assert dn_label_encoder("referring", 1) == "grounding_label_enc"
    assert dn_label_encoder("visual", 1) == "grounding_label_enc"
    assert dn_label_encoder("detection", 8) == "coco_label_enc"
    assert dn_label_encoder("detection", 150) == "vg_label_enc"
    assert dn_label_encoder("detection", 1203) is None


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown config keys: optim.lr_max"):
        TrainConfig.from_dict({"optim": {"lr_max": 1.0}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        TrainConfig.from_yaml(bad)
    with pytest.raises(ValueError, match="steps and batch_size must be >= 1"):
        GleeTrainer(_config(tmp_path, steps=0), FixedScenes(ShapeworldSource(), 1))


def test_train_glee_command(tmp_path):
    from typer.testing import CliRunner

    from gleekit.cli import app

    config = tmp_path / "run.yaml"
    config.write_text("model: {preset: nano}\nsteps: 2\nbatch_size: 1\nloss: {num_points: 64}\n"
                      f"output_dir: {tmp_path / 'out'}\neval_every: 0\ncheckpoint_every: 1\n")
    result = CliRunner().invoke(app, ["train", "glee", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "checkpoint-last" / "trainer_state.pt").is_file()
    assert not list((tmp_path / "out").glob("*.tmp"))
    config.write_text("optim: {lr_max: 1}\n")
    result = CliRunner().invoke(app, ["train", "glee", "--config", str(config)])
    assert result.exit_code == 1
    assert "unknown config keys: optim.lr_max" in result.output


def test_region_classification_loss_trains_its_head_and_resumes(tmp_path, scenes):
    """The auxiliary head is optimised with the model, logged, checkpointed and restored; the model saved is plain."""
    config = _config(tmp_path, steps=3, loss={"num_points": 256, "region_class_weight": 1.0})
    source = ShapeworldSource(task_weights={"detection": 1.0})
    trainer = GleeTrainer(config, source, model=_seeded_model())
    batches = trainer._batches(StepSamples(source, 2)[0], np.random.default_rng(0))
    losses = trainer.batch_losses(batches, torch.Generator().manual_seed(0))
    torch.testing.assert_close(losses["loss"].detach(), losses["glee_loss"] + losses["region_class"])  # weight 1
    head = trainer.accelerator.unwrap_model(trainer.region_classifier)
    assert head.names == list(ShapeworldSource().category_names)
    before = head.heads[0].weight.detach().clone()
    result = trainer.train()
    assert not torch.equal(before, head.heads[0].weight)
    components = [c for _, c in result.history["components"]]
    assert all(np.isfinite(c["region_class"]) and c["region_class"] > 0 for c in components)
    assert not any(k.startswith("region") for k in GleeModel.from_pretrained(result.model_dir).state_dict())
    resumed = GleeTrainer(config, ShapeworldSource(task_weights={"detection": 1.0}), model=_seeded_model(seed=1))
    assert resumed.resume()
    torch.testing.assert_close(resumed.accelerator.unwrap_model(resumed.region_classifier).heads[0].weight,
                               head.heads[0].weight)
    other_head = _config(tmp_path, steps=3, loss={"num_points": 256, "region_class_weight": 1.0,
                                                  "region_per_level": True})
    with pytest.raises(ValueError, match=r"other settings \(loss.region_per_level False -> True\)"):
        GleeTrainer(other_head, ShapeworldSource(task_weights={"detection": 1.0}), model=_seeded_model()).resume()
    with pytest.raises(ValueError, match="region_class_weight must be >= 0"):
        GleeTrainer(_config(tmp_path / "x", loss={"region_class_weight": -1.0}), scenes, model=_seeded_model())
    with pytest.raises(ValueError, match="glee_weight must be >= 0, and > 0 unless .* nothing would be trained"):
        GleeTrainer(_config(tmp_path / "z", loss={"glee_weight": 0.0}), scenes, model=_seeded_model())
    with pytest.raises(ValueError, match="category names"):
        GleeTrainer(_config(tmp_path / "y", loss={"region_class_weight": 1.0}), scenes, model=_seeded_model())


def test_region_colour_target_and_per_level_heads(tmp_path, scenes):
    """loss.region_colour_weight adds the head's colour regression to the total; loss.region_per_level gives one
    head per backbone level; a negative colour weight is refused."""
    config = _config(tmp_path, loss={"num_points": 256, "region_class_weight": 1.0, "region_colour_weight": 0.5,
                                     "region_per_level": True})
    source = ShapeworldSource(task_weights={"detection": 1.0})
    trainer = GleeTrainer(config, source, model=_seeded_model())
    head = trainer.accelerator.unwrap_model(trainer.region_classifier)
    assert len(head.heads) == len(trainer.unwrapped.backbone.out_features) and head.colour
    batches = trainer._batches(StepSamples(source, 2)[0], np.random.default_rng(0))
    losses = trainer.batch_losses(batches, torch.Generator().manual_seed(0))
    assert float(losses["region_colour"]) > 0
    torch.testing.assert_close(losses["loss"].detach(),
                               losses["glee_loss"] + losses["region_class"] + 0.5 * losses["region_colour"])
    with pytest.raises(ValueError, match="region_colour_weight must be >= 0"):
        GleeTrainer(_config(tmp_path / "x", loss={"region_colour_weight": -1.0}), source, model=_seeded_model())
    with pytest.raises(ValueError, match="need a data source with category names"):
        GleeTrainer(_config(tmp_path / "y", loss={"region_colour_weight": 1.0}), scenes, model=_seeded_model())


def test_backbone_pretraining_with_glee_weight_zero(tmp_path):
    """glee_weight 0: only the backbone (and the region head) learn, from region classification alone; validation
    reports the head's loss and accuracy instead of GLEE's loss."""
    config = _config(tmp_path, steps=3, eval_every=3, val_batches=1,
                     loss={"num_points": 256, "region_class_weight": 1.0, "glee_weight": 0.0})
    source = ShapeworldSource(task_weights={"detection": 1.0})
    model = _seeded_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = GleeTrainer(config, source, val_source=ShapeworldSource("val", task_weights={"detection": 1.0}),
                         model=model).train()
    after = GleeModel.from_pretrained(result.model_dir).state_dict()
    changed = {k.split(".")[0] for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[k])}
    assert changed == {"backbone"}
    components = [c for _, c in result.history["components"]]
    assert all(set(c) == {"region_class", "region_accuracy"} for c in components)
    assert all(0.0 <= c["region_accuracy"] <= 1.0 for c in components)
    metrics = result.history["metrics"][-1][1]
    assert "val_loss" not in metrics and metrics["val_region_class"] > 0 and 0 <= metrics["val_region_accuracy"] <= 1
    mixed = GleeTrainer(_config(tmp_path / "mixed", loss={"region_class_weight": 1.0, "glee_weight": 0.0}),
                        ShapeworldSource(task_weights={"referring": 1.0}), model=_seeded_model())
    with pytest.raises(ValueError, match="trains on detection batches only"):
        mixed.train()


def test_negative_referring_samples_train_every_query_down(tmp_path):
    """A referring batch holding negatives (no target) gives a finite loss whose gradient lowers the negatives'
    referring logits; data.negative_referring reaches the shapeworld sources."""
    config = _config(tmp_path, data={"task_weights": {"referring": 1.0}, "negative_referring": 1.0})
    from train.glee.trainer import sources_from_config

    source, val_source = sources_from_config(config)
    assert source.negative_referring == val_source.negative_referring == 1.0
    coco = _config(tmp_path, data={"source": "coco", "coco_json": "a.json", "image_root": ".", "negative_referring": 0.5})
    with pytest.raises(ValueError, match="data.negative_referring is a share of shapeworld samples"):
        sources_from_config(coco)
    trainer = GleeTrainer(config, source, model=_seeded_model())
    samples = StepSamples(source, 2)[0]
    assert all(len(s.labels) == 0 for s in samples)
    batches = trainer._batches(samples, np.random.default_rng(0))
    model = trainer.unwrapped

    def mean_logit() -> float:
        with torch.no_grad():
            out = model(batches[0].images, **batches[0].model_kwargs())
        return float(out.pred_logits.mean())

    before = mean_logit()
    for _ in range(3):
        losses = trainer.batch_losses(batches, torch.Generator().manual_seed(0))
        assert torch.isfinite(losses["loss"]) and float(losses["loss"].detach()) > 0
        trainer.optimizer.zero_grad()
        losses["loss"].backward()
        trainer.optimizer.step()
    assert mean_logit() < before - 0.1


def test_query_colour_loss_uses_the_criterions_final_matches_and_resumes(tmp_path, scenes):
    """loss.query_colour_weight adds the matched queries' colour regression (on the criterion's own final-step
    matches) to the total; its head is optimised, checkpointed and restored, and not saved with the model."""
    config = _config(tmp_path, steps=2, loss={"num_points": 256, "query_colour_weight": 0.5})
    trainer = GleeTrainer(config, scenes, model=_seeded_model())
    batches = trainer._batches(StepSamples(scenes, 2)[0], np.random.default_rng(0))
    losses = trainer.batch_losses(batches, torch.Generator().manual_seed(0))
    assert float(losses["query_colour"]) > 0
    torch.testing.assert_close(losses["loss"].detach(), losses["glee_loss"] + 0.5 * losses["query_colour"])
    head = trainer.accelerator.unwrap_model(trainer.query_colour)
    before = head.linear.weight.detach().clone()
    result = trainer.train()
    assert not torch.equal(before, head.linear.weight)
    assert all(c["query_colour"] > 0 for _, c in result.history["components"])
    assert not any("colour" in k for k in GleeModel.from_pretrained(result.model_dir).state_dict())
    resumed = GleeTrainer(config, scenes, model=_seeded_model(seed=1))
    assert resumed.resume()
    torch.testing.assert_close(resumed.accelerator.unwrap_model(resumed.query_colour).linear.weight, head.linear.weight)
    with pytest.raises(ValueError, match="query_colour_weight must be >= 0"):
        GleeTrainer(_config(tmp_path / "x", loss={"query_colour_weight": -1.0}), scenes, model=_seeded_model())
    with pytest.raises(ValueError, match="query_colour_weight needs GLEE's decoder"):
        GleeTrainer(_config(tmp_path / "y", loss={"query_colour_weight": 1.0, "glee_weight": 0.0,
                                                  "region_class_weight": 1.0}),
                    ShapeworldSource(task_weights={"detection": 1.0}), model=_seeded_model())
