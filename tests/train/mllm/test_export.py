"""Export: LoRA (with the added tokens' embedding rows trained in full or as peft trainable tokens) merged, the
folder reloads with load_gleellm and reproduces the model; a mismatch is refused. Saving unmerged (base VLM +
adapter) reloads the same outputs too."""
from __future__ import annotations

import pytest
import torch

from mllm.io import load_gleellm, save_gleellm
from train.mllm.config import MllmTrainConfig
from train.mllm.data_config import ShapeworldChats
from train.mllm.export import ExportMismatchError, export_gleellm, reference_outputs
from train.mllm.trainer import build_model, make_batch

CONFIG = {"model": {"num_objects": 2, "tiny": {"image_size": 32, "hidden": 32, "layers": 1, "heads": 2,
                                                "vocab_samples": 4}, "lora": {"r": 4, "alpha": 8}}, "data": {"scenes": 4}}


@pytest.fixture(params=["full rows", "new token rows"])  # export merges the model in place: one per test
def trained(request):
    torch.set_num_threads(1)
    source = ShapeworldChats(4, ["referring"])
    rows = {"new_token_rows": True, "modules_to_save": []} if request.param == "new token rows" else {}
    config = {**CONFIG, "model": {**CONFIG["model"], "lora": {**CONFIG["model"]["lora"], **rows}}}
    model = build_model(MllmTrainConfig.from_dict(config), source)
    trained = {n for n, p in model.vlm.named_parameters() if p.requires_grad and ("lora_B" in n or "_tokens_" in n)}
    assert any("trainable_tokens_delta" in n for n in trained) == bool(rows)
    with torch.no_grad():  # LoRA B and the token deltas start at 0: make the adapter matter before merging
        for name, param in model.vlm.named_parameters():
            if name in trained:
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


def test_unmerged_save_reloads_the_same_outputs(trained, tmp_path):
    model, batch = trained
    expected = reference_outputs(model, batch)
    path = save_gleellm(model, tmp_path / "model")
    assert (path / "vlm_adapter").is_dir()
    found = reference_outputs(load_gleellm(path), batch)
    torch.testing.assert_close(found["logits"], expected["logits"], atol=1e-4, rtol=0)
