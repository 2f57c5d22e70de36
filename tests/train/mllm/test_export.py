"""Export: LoRA merged, the folder reloads with load_gleellm and reproduces the model; a mismatch is refused."""
from __future__ import annotations

import pytest
import torch

from mllm.io import load_gleellm
from train.mllm.config import MllmTrainConfig
from train.mllm.data_config import ShapeworldChats
from train.mllm.export import ExportMismatchError, export_gleellm, reference_outputs
from train.mllm.trainer import build_model, make_batch

CONFIG = {"model": {"num_objects": 2, "tiny": {"image_size": 32, "hidden": 32, "layers": 1, "heads": 2,
                                                "vocab_samples": 4}, "lora": {"r": 4, "alpha": 8}}, "data": {"scenes": 4}}


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    source = ShapeworldChats(4, ["referring"])
    model = build_model(MllmTrainConfig.from_dict(CONFIG), source)
    with torch.no_grad():  # LoRA B starts at 0: make the adapter matter before merging
        for name, param in model.vlm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return model, make_batch(model, [source.sample(i) for i in range(2)])


def test_export_merges_and_reloads_the_same_outputs(trained, tmp_path):
    model, batch = trained
    expected = reference_outputs(model, batch)
    path = export_gleellm(model, tmp_path / "model", batch, atol=1e-4)
    assert not (path / "vlm_adapter").exists()  # merged: a plain VLM folder
    found = reference_outputs(load_gleellm(path), batch)
    torch.testing.assert_close(found["logits"], expected["logits"], atol=1e-4, rtol=0)


def test_export_is_refused_when_the_reload_differs(trained, tmp_path):
    model, batch = trained
    with pytest.raises(ExportMismatchError, match="export refused"):
        export_gleellm(model, tmp_path / "model", batch, atol=-1.0)
    assert not (tmp_path / "model").exists() and not (tmp_path / "model.tmp").exists()
