"""The training run's VLM from a saved Hugging Face folder: as saved, or quantized (QLoRA) through the adapters'
loader, with the processor saved beside it."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from mllm.tiny import tiny_llava, word_tokenizer
from train.mllm.config import MllmTrainConfig
from train.mllm.trainer import _base_vlm


@pytest.fixture(scope="module")
def saved_vlm(tmp_path_factory):
    torch.manual_seed(0)
    vlm, processor = tiny_llava(word_tokenizer(["USER: the red circle ASSISTANT: yes"]), image_size=32, hidden=40,
                                layers=1, heads=2)
    folder = tmp_path_factory.mktemp("vlm")
    vlm.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, vlm, processor.tokenizer.get_vocab()


def load(folder, bits):
    config = MllmTrainConfig.from_dict({"model": {"vlm": str(folder), "bits": bits}, "precision": "fp32"})
    return _base_vlm(config, source=None)


def test_saved_vlm_loads_as_saved(saved_vlm):
    folder, reference, vocab = saved_vlm
    vlm, processor = load(folder, None)
    assert processor.tokenizer.get_vocab() == vocab
    for (name, expected), (_, got) in zip(reference.state_dict().items(), vlm.state_dict().items(), strict=True):
        assert torch.equal(expected, got), name


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_four_bit_training_vlm_quantizes_the_language_model_only(saved_vlm):
    import bitsandbytes as bnb

    vlm, _ = load(saved_vlm[0], 4)
    four_bit = {name: module for name, module in vlm.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert len(four_bit) == 7 and all("language_model" in name for name in four_bit)  # q k v o gate up down
    # narrow layers stay on bitsandbytes' generic CPU path (adapters.quantization.unpack_narrow_4bit_layers)
    assert all(not getattr(module, "support_avx512bf16_for_cpu", False) for module in four_bit.values())

