"""The mLLM training config: LISA defaults, unknown keys named, shipped recipes and DeepSpeed files valid."""
from __future__ import annotations

import pytest

from train.glee.config import TrainConfig
from train.mllm.config import RECIPES, MllmTrainConfig
from train.mllm.trainer import deepspeed_config, lr_factor, sample_indices


def test_defaults_are_lisas_recipe():
    cfg = MllmTrainConfig()
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.warmup_steps) == (3e-4, 0.0, (0.9, 0.95), 100)
    assert (cfg.grad_accum, cfg.batch_size, cfg.deepspeed, cfg.model.lora.r, cfg.model.lora.alpha) == (10, 2, "zero2", 8, 16)
    factor = lr_factor(cfg)
    assert factor(0) == pytest.approx(0.01) and factor(99) == 1.0 and factor(cfg.steps) == 0.0


@pytest.mark.parametrize("data, key", [({"optim": {"lrr": 1}}, "optim.lrr"), ({"stepz": 3}, "stepz"),
                                       ({"model": {"lora": {"rank": 4}}}, "model.lora.rank")])
def test_unknown_keys_are_named(tmp_path, data, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        MllmTrainConfig.from_dict(data)
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown config keys: optim\.lrr"):
        MllmTrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match=r"optim\.lrr"):  # the GLEE config shares the loader
        TrainConfig.from_dict({"optim": {"lrr": 1}})


def test_values_are_converted_or_refused_by_their_type(tmp_path):
    path = tmp_path / "typed.yaml"
    path.write_text("optim:\n  lr: 3e-4\n  betas: [0.9, 0.95]\n")  # YAML 1.1 reads 3e-4 as a string
    config = MllmTrainConfig.from_yaml(path)
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float) and config.optim.betas == (0.9, 0.95)
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ValueError, match=r"typed\.yaml: optim\.lr must be float, got 'fast'"):
        MllmTrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match=r"model\.lora\.modules_to_save must be list\[str\], got 'lm_head'"):
        MllmTrainConfig.from_dict({"model": {"lora": {"modules_to_save": "lm_head"}}})
    with pytest.raises(ValueError, match=r"data\.task_weights must be dict\[str, float\]"):
        TrainConfig.from_dict({"data": {"task_weights": {"detection": "high"}}})


def test_bad_values_fail_at_start():
    with pytest.raises(ValueError, match="grad_accum"):
        MllmTrainConfig.from_dict({"grad_accum": 0})
    with pytest.raises(ValueError, match="lora.enabled"):
        MllmTrainConfig.from_dict({"model": {"bits": 4, "lora": {"enabled": False}}})
    with pytest.raises(ValueError, match=r"new_token_rows .* \['embed_tokens', 'lm_head'\], .* remove them"):
        MllmTrainConfig.from_dict({"model": {"lora": {"new_token_rows": True}}})
    with pytest.raises(FileNotFoundError, match="zero9"):
        MllmTrainConfig.from_dict({"deepspeed": "zero9"}).deepspeed_file()


@pytest.mark.parametrize("name", ["mllm_shapeworld_cpu.yaml", "mllm_lisa_7b.yaml"])
def test_recipes_load(name):
    cfg = MllmTrainConfig.from_yaml(RECIPES / name)
    ds = deepspeed_config(cfg)
    assert ds["train_micro_batch_size_per_gpu"] == cfg.batch_size and ds["gradient_accumulation_steps"] == cfg.grad_accum
    assert "auto" not in str(ds)


def test_proof_recipes_are_the_shipped_models_recipe():
    from train.data.shapeworld import CATEGORY_NAMES

    first = MllmTrainConfig.from_yaml(RECIPES / "mllm_shapeworld_proof_captions.yaml")
    cfg = MllmTrainConfig.from_yaml(RECIPES / "mllm_shapeworld_proof.yaml")
    assert deepspeed_config(cfg) is None and not cfg.model.lora.enabled
    assert cfg.model.object_categories == list(CATEGORY_NAMES)
    # stage 1: captions only, no pointer loss, no [SEG] through GLEE
    assert (first.steps, first.model.init, first.data.scenes) == (600, None, 3000)
    assert first.model.pointer_from_step >= first.steps and first.model.glee_from_step >= first.steps
    assert {k for k, v in first.data.kind_rates.items() if v > 0} == {"caption"}
    # stage 2: from stage 1's model, the whole mixture
    assert cfg.model.init == f"{first.output_dir}/model"
    assert (cfg.steps, cfg.batch_size, cfg.model.glee_from_step, cfg.model.pointer_from_step, cfg.data.scenes) == (
        1600, 16, 1000, 0, 3000)
    assert set(cfg.data.kind_rates) == set(cfg.data.kinds) == {"reasoning", "referring", "pair", "caption"}
    assert all(cfg.data.kind_rates.values())
    import json

    from mllm.io import BUNDLED

    shipped = json.loads((BUNDLED / "shapeworld-tiny" / "gleellm.json").read_text())["config"]
    assert {k: shipped[k] for k in first.model.settings} == first.model.settings
    assert shipped["object_categories"] == cfg.model.object_categories and shipped["num_objects"] == 10


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    cfg = MllmTrainConfig.from_dict({"steps": 110, "optim": {"warmup_steps": 10, "schedule": "cosine",
                                                             "min_lr_ratio": 0.1}})
    factor = lr_factor(cfg)
    assert factor(0) == pytest.approx(0.1) and factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.55) and factor(110) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        MllmTrainConfig.from_dict({"optim": {"min_lr_ratio": 1.5}})
    for name in ("glee_from_step", "pointer_from_step"):
        with pytest.raises(ValueError, match=f"model.{name} must be >= 0, got -1"):
            MllmTrainConfig.from_dict({"model": {name: -1}})


def test_lisa_recipe_matches_reference():
    cfg = MllmTrainConfig.from_yaml(RECIPES / "mllm_lisa_7b.yaml")
    assert cfg.data.mixture.rates == {"sem_seg": 9, "refer_seg": 3, "vqa": 3, "reason_seg": 1}
    assert (cfg.optim.lr, cfg.grad_accum, cfg.precision, cfg.model.lora.r) == (3e-4, 10, "bf16", 8)
    assert deepspeed_config(cfg)["zero_optimization"]["stage"] == 2
    assert deepspeed_config(MllmTrainConfig(deepspeed="zero3"))["zero_optimization"]["stage"] == 3


def test_processes_split_a_step_like_accumulation():
    one = [i for m in range(2) for i in sample_indices(3, 0, 1, m, batch_size=2, grad_accum=2)]
    two = [i for r in range(2) for i in sample_indices(3, r, 2, 0, batch_size=2, grad_accum=1)]
    assert one == two == [12, 13, 14, 15]


def test_validation_needs_a_split_outside_shapeworld():
    with pytest.raises(ValueError, match="validation.split_dir"):
        MllmTrainConfig.from_dict({"data": {"source": "mixture"}, "validation": {"every": 10}})
    assert MllmTrainConfig.from_dict({"validation": {"every": 10}}).validation.samples == 16


def test_unknown_tracker_is_named():
    with pytest.raises(ValueError, match=r"unknown trackers \['mlflowx'\]"):
        MllmTrainConfig.from_dict({"report_to": ["tensorboard", "mlflowx"]})


def test_model_settings_reach_the_gleellm_config_and_unknown_ones_are_named():
    from train.mllm.data_config import ShapeworldChats
    from train.mllm.trainer import build_model

    tiny = {"image_size": 32, "hidden": 32, "layers": 1, "heads": 2, "vocab_samples": 4}
    source = ShapeworldChats(4, ["referring"])
    cfg = MllmTrainConfig.from_dict({"model": {"num_objects": 2, "tiny": tiny, "lora": {"enabled": False},
                                               "settings": {"pointer_keys": "slots", "silhouette_size": 4}}})
    model = build_model(cfg, source)
    assert (model.config.pointer_keys, model.config.silhouette_size, model.config.num_objects) == ("slots", 4, 2)
    bad = MllmTrainConfig.from_dict({"model": {"tiny": tiny, "settings": {"pointer_key": "slots"}}})
    with pytest.raises(ValueError, match="model.settings: .*pointer_key"):
        build_model(bad, source)
