"""Opt-in bfloat16 autocast in the predictor: the forward runs under autocast, outputs stay float32 and close."""
from __future__ import annotations

import numpy as np
import torch

from glee_core.modeling.glee import GleeModel
from glee_core.predictor import GleePredictor
from glee_core.structures import Categories


def test_autocast_runs_the_forward_in_bfloat16_and_keeps_float32_weights():
    torch.manual_seed(0)
    model = GleeModel.from_config("tiny")
    seen = []
    model.backbone.register_forward_hook(lambda module, inputs, output: seen.append(
        (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    reference = GleePredictor(model).predict(image, Categories(["circle", "square"]), topk=5)
    fast = GleePredictor(model, autocast=torch.bfloat16).predict(image, Categories(["circle", "square"]), topk=5)
    assert [enabled for enabled, _ in seen] == [False, True] and seen[1][1] == torch.bfloat16
    assert model.lang_projection.dtype == torch.float32
    assert fast.scores.dtype == np.float32 and fast.boxes.dtype == np.float32
    assert np.abs(fast.scores - reference.scores).max() < 0.05
    assert not torch.is_autocast_enabled("cpu")
