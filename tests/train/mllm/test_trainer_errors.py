"""Trainer failures that must explain themselves: out of memory names the knobs to turn."""
from __future__ import annotations

import pytest
import torch

from train.mllm.config import MllmTrainConfig
from train.mllm.data_config import ShapeworldChats
from train.mllm.trainer import MllmTrainer


def test_out_of_memory_names_the_knobs_to_turn(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    config = MllmTrainConfig.from_dict({
        "model": {"num_objects": 2, "tiny": {"image_size": 32, "hidden": 32, "layers": 1, "heads": 2,
                                              "vocab_samples": 4}},
        "deepspeed": None, "precision": "fp32", "steps": 2, "batch_size": 2, "grad_accum": 1,
        "output_dir": str(tmp_path / "run")})
    trainer = MllmTrainer(config, ShapeworldChats(4, ["referring"]))  # plain accelerate, one CPU process

    def out_of_memory(samples):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "_micro_step", out_of_memory)
    with pytest.raises(RuntimeError, match=r"lower batch_size.*gradient_checkpointing.*zero3.*bits: 4.*batch_size 2"):
        trainer.train_step()
    assert trainer.step == 0
