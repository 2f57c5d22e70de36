"""The shapeworld mLLM loop: a short run lowers the loss, saves a loadable folder, and continues from it."""
from __future__ import annotations

import json

import numpy as np
import torch

from mllm.io import load_gleellm
from train.mllm.shapeworld import MllmRecipe, train


def test_short_run_learns_saves_and_continues(tmp_path):
    torch.manual_seed(0)
    recipe = MllmRecipe(train_scenes=10, steps=24, batch_size=4, lr=3e-3, warmup=2, glee_from_step=16,
                        mask_prompts_per_step=1, save_every=12, hidden=64, layers=2, heads=2)
    model, history = train(recipe, tmp_path / "run", progress=False)
    ce = [row["ce"] for row in history]
    assert np.mean(ce[-4:]) < 0.6 * np.mean(ce[:4]), ce
    assert all(row["mask_dice"] == 0 for row in history[:16]) and any(row["mask_dice"] > 0 for row in history[16:])
    saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert saved["steps"] == 24 and len(json.loads((tmp_path / "run" / "history.json").read_text())) == 24
    loaded = load_gleellm(tmp_path / "run")
    assert loaded.processor.tokenizer.get_vocab() == model.processor.tokenizer.get_vocab()
    more = MllmRecipe(train_scenes=4, steps=2, batch_size=2, glee_from_step=0, mask_prompts_per_step=1, seed=1)
    _, history = train(more, tmp_path / "more", init_from=tmp_path / "run", progress=False)
    assert len(history) == 2 and history[0]["ce"] < ce[0]
