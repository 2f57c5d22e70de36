"""YAML configs built from a ``base`` chain: overrides merged key by key, loops and bad bases refused by file."""
from __future__ import annotations

from pathlib import Path

import pytest

from train.config_io import merged, read_mapping
from train.glee.config import TrainConfig
from train.mllm.config import RECIPES, MllmTrainConfig


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_merged_overrides_scalars_and_lists_and_merges_mappings():
    base = {"optim": {"lr": 1e-3, "warmup_steps": 20}, "loss": {"weights": {"cls": 4.0, "giou": 2.0}},
            "model": {"freeze": ["text_encoder"]}, "steps": 600}
    override = {"optim": {"lr": 1e-4}, "loss": {"weights": {"cls": 8.0}}, "model": {"freeze": []}, "seed": 3}
    assert merged(base, override) == {"optim": {"lr": 1e-4, "warmup_steps": 20},
                                      "loss": {"weights": {"cls": 8.0, "giou": 2.0}},
                                      "model": {"freeze": []}, "steps": 600, "seed": 3}
    assert base["optim"]["lr"] == 1e-3  # inputs untouched


def test_a_chain_of_bases_resolves_relative_to_each_file(tmp_path):
    write(tmp_path / "a" / "first.yaml", "steps: 600\nbatch_size: 8\noptim: {lr: 7.0e-4, warmup_steps: 30}\n")
    write(tmp_path / "a" / "second.yaml", "base: first.yaml\nsteps: 1800\noptim: {lr: 5.0e-4}\n")
    third = write(tmp_path / "b" / "third.yaml", "# a comment\nbase: ../a/second.yaml\nbatch_size: 16\n")
    assert read_mapping(third) == {"steps": 1800, "batch_size": 16, "optim": {"lr": 5.0e-4, "warmup_steps": 30}}
    cfg = TrainConfig.from_yaml(third)
    assert (cfg.steps, cfg.batch_size, cfg.optim.lr, cfg.optim.warmup_steps) == (1800, 16, 5e-4, 30)


def test_bad_bases_are_refused_naming_the_file(tmp_path):
    write(tmp_path / "x.yaml", "base: y.yaml\nsteps: 1\n")
    looped = write(tmp_path / "y.yaml", "base: x.yaml\nsteps: 2\n")
    with pytest.raises(ValueError, match=r"x.yaml: base chain loops back to .*y.yaml: .*y.yaml -> .*x.yaml"):
        read_mapping(looped)
    missing = write(tmp_path / "m.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ValueError, match=r"cannot read config .*nowhere.yaml"):
        read_mapping(missing)
    for bad in ("base: 3", "base: ''", "base: [a.yaml]"):
        with pytest.raises(ValueError, match=r"bad.yaml: base must be the path of another YAML config"):
            read_mapping(write(tmp_path / "bad.yaml", bad + "\n"))
    typo = write(tmp_path / "typo.yaml", "base: x2.yaml\nstepz: 5\n")
    write(tmp_path / "x2.yaml", "steps: 1\n")
    with pytest.raises(ValueError, match=r"typo.yaml: unknown config keys: stepz"):
        TrainConfig.from_yaml(typo)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_recipe_loads(path):
    cls = MllmTrainConfig if path.name.startswith("mllm") else TrainConfig
    assert cls.from_yaml(path).steps >= 1


def test_nano_stage_recipes_state_only_their_changes_over_the_previous_stage():
    stage14 = TrainConfig.from_yaml(RECIPES / "nano_stage14.yaml")
    assert read_mapping(RECIPES / "nano_stage14.yaml")["model"]["init"] == "runs/nano-stage13/model"
    assert (stage14.loss.weights.cls, stage14.optim.text_lr_mult, stage14.data.seed) == (8.0, 0.3, 17)
    assert stage14.model.freeze == [] and stage14.loss.num_points == 1024  # stage 9's and stage 1's settings
    stage15 = TrainConfig.from_yaml(RECIPES / "nano_stage15.yaml")
    assert (stage15.data.video_frames, stage15.data.seed, stage15.loss.weights.cls) == (0.5, 18, 8.0)
