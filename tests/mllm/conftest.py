"""Tiny GLEE-LLMs for the mllm tests: a local word-level tokenizer, a random tiny LLaVA, a random tiny GLEE."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glee_core.modeling.glee import GleeModel
from mllm.config import GleeLLMConfig
from mllm.modeling import GleeLLM
from mllm.tiny import tiny_llava, word_tokenizer

WORDS = ["USER: ASSISTANT: Sure, it is the red circle and blue star. Please segment what is in this image?",
         "A green square left of the large triangle. one two a"]


def make_model(num_objects: int = 4, seed: int = 0, **config) -> GleeLLM:
    torch.manual_seed(seed)
    vlm, processor = tiny_llava(word_tokenizer(WORDS), image_size=32, hidden=32, layers=2, heads=2, vision_hidden=32)
    glee = GleeModel.from_config("tiny")
    defaults = dict(num_objects=num_objects, object_categories=["circle", "star"], system_prompt="", max_length=200,
                    max_new_tokens=8)
    return GleeLLM.build(vlm, processor, glee.eval(), GleeLLMConfig(**{**defaults, **config}))


@pytest.fixture
def model() -> GleeLLM:
    return make_model()


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)


def box_mask(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask
