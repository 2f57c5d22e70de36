"""Trainer failures that must explain themselves: out of memory names the knobs to turn; a setting this machine
cannot run is refused before anything is built."""
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="peft's ZeRO-3 trainable tokens run on CUDA")
def test_new_token_rows_under_zero3_on_cpu_is_refused_up_front(tmp_path):
    config = MllmTrainConfig.from_dict({"model": {"lora": {"new_token_rows": True, "modules_to_save": []}},
                                        "deepspeed": "zero3", "output_dir": str(tmp_path / "run")})
    with pytest.raises(ValueError, match=r"new_token_rows under ZeRO-3 needs CUDA.*zero2"):
        MllmTrainer(config, ShapeworldChats(4, ["referring"]))
    assert not (tmp_path / "run").exists()
