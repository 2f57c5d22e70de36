"""The learning-proof recipe runs through the trainer: shrunk, it lowers the token loss, sends no [SEG] through
GLEE before ``glee_from_step``, weighs the pointer loss 0 before ``pointer_from_step``, trains on captions of
precomputed proposals, and exports a loadable model; a fresh start over its checkpoints is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mllm.io import load_gleellm
from train.mllm.config import RECIPES, MllmTrainConfig
from train.mllm.data_config import source_from_config
from train.mllm.trainer import MllmTrainer


def test_shrunk_proof_recipe_learns_and_exports(tmp_path):
    torch.set_num_threads(1)
    cfg = MllmTrainConfig.from_yaml(RECIPES / "mllm_shapeworld_proof_captions.yaml")  # stage 1: the whole model
    cfg.data.kind_rates = MllmTrainConfig.from_yaml(RECIPES / "mllm_shapeworld_proof.yaml").data.kind_rates
    cfg.steps, cfg.batch_size, cfg.save_every, cfg.output_dir = 24, 4, 12, str(tmp_path / "run")
    cfg.data.scenes, cfg.optim.warmup_steps, cfg.optim.lr = 10, 2, 3e-3
    cfg.model.glee_from_step, cfg.model.pointer_from_step, cfg.model.train_mask_prompts = 16, 8, 1
    tiny = cfg.model.tiny
    tiny.hidden, tiny.layers, tiny.heads, tiny.vocab_samples = 64, 2, 2, 100
    trainer = MllmTrainer(cfg, source_from_config(cfg.data))
    captions = [s for s in map(trainer.source.sample, range(40)) if s.meta["kind"] == "caption"]
    assert captions and all(s.objects is not None and s.objects.queries.shape[1] == 10 for s in captions)
    result = trainer.train(resume=False)
    ce = [row["ce"] for row in result.history]
    assert np.mean(ce[-4:]) < 0.6 * np.mean(ce[:4]), ce
    assert all(row["mask_dice"] == 0 for row in result.history[:16])
    assert any(row["mask_dice"] > 0 for row in result.history[16:])
    assert all(np.isfinite(row["pointer"]) and row["pointer"] > 0 for row in result.history)  # always computed
    before, after = result.history[:8], result.history[8:16]  # loss = CE (+ pointer from step 8) before GLEE
    assert all(row["loss"] == pytest.approx(row["ce"], rel=1e-5) for row in before)
    assert all(row["loss"] == pytest.approx(row["ce"] + row["pointer"], rel=1e-5) for row in after)
    loaded = load_gleellm(result.model_dir)
    assert loaded.processor.tokenizer.get_vocab() == trainer.unwrapped.processor.tokenizer.get_vocab()
    assert loaded.config.object_categories == cfg.model.object_categories
    assert loaded.config.loss.pointer == 1.0 and loaded.config.train_mask_prompts == 1  # not the early-step values
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run \(checkpoint-00000024\): resume"):
        trainer.train(resume=False)
