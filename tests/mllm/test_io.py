"""GleeLLM folders: exact round trip, LoRA adapters, 4-bit loading, and refusals of mismatched or broken folders."""
from __future__ import annotations

import json

import pytest
import torch

from glee_core.checkpoint import CheckpointError
from mllm.batching import collate
from mllm.io import CONFIG_FILE, load_gleellm, save_gleellm
from tests.mllm.conftest import box_mask, make_model


def _batch(model, image):
    h, w = image.shape[:2]
    conv = model.encode(image, [("Please segment the red circle.", "Sure, [SEG].")])
    return collate([conv], [image], model.glee.config.input, model.processor.tokenizer.pad_token_id,
                   seg_masks=[[box_mask(h, w, 10, 50, 10, 60)]])


def _outputs(model, batch):
    with torch.no_grad():
        out = model.eval()(batch)
    return out.logits, out.seg_masks, out.pointer_logits


def test_round_trip_gives_identical_outputs(model, image, tmp_path):
    torch.nn.init.normal_(model.seg_projector.mlp[2].weight)  # not the initial weights
    folder = save_gleellm(model, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, "glee", "projectors.safetensors", "vlm"])
    loaded = load_gleellm(folder)
    batch = _batch(model, image)
    for a, b in zip(_outputs(model, batch), _outputs(loaded, batch)):
        assert torch.equal(a, b)
    assert loaded.token_ids == model.token_ids and loaded.config == model.config


def test_lora_vlm_is_saved_as_adapter_and_reloads(model, image, tmp_path):
    from adapters.lora import apply_lora, llm_lora_config

    model.vlm = apply_lora(model.vlm, llm_lora_config(r=4, modules_to_save=["lm_head"]))  # LISA trains lm_head
    for name, parameter in model.vlm.named_parameters():
        if "lora_B" in name or "modules_to_save" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    folder = save_gleellm(model, tmp_path / "m")
    assert (folder / "vlm_adapter" / "adapter_config.json").is_file()
    loaded = load_gleellm(folder)
    batch = _batch(model, image)
    assert torch.allclose(_outputs(model, batch)[0], _outputs(loaded, batch)[0], atol=1e-5)


def test_base_vlm_of_another_shape_is_refused(model, tmp_path):
    folder = save_gleellm(model, tmp_path / "m")
    other = save_gleellm(make_model(num_objects=4, seed=3), tmp_path / "other")
    record = json.loads((folder / CONFIG_FILE).read_text())
    record["config"]["vlm_fingerprint"]["hidden_size"] = 4096
    (folder / CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="hidden_size 4096 expected, 32 found"):
        load_gleellm(folder, vlm=other / "vlm")


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / CONFIG_FILE).unlink(), "not a GleeLLM folder"),
    (lambda f: (f / CONFIG_FILE).write_text(json.dumps({"format_version": 99})), "format_version 99"),
    (lambda f: (f / CONFIG_FILE).write_text(json.dumps({"format_version": 1})),
     r"format_version 1; this gleekit reads 2; format 1 was written before .* `model.glee: <folder>/glee`"),
])
def test_broken_folders_are_reported(model, tmp_path, damage, message):
    folder = save_gleellm(model, tmp_path / "m")
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        load_gleellm(folder)


def test_projector_weights_must_match(model, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_gleellm(model, tmp_path / "m")
    state = load_file(str(folder / "projectors.safetensors"))
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / "projectors.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected \\['extra.weight'\\]"):
        load_gleellm(folder)


def test_four_bit_llm_loads_and_answers_on_cpu(model, image, tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from adapters.quantization import DEFAULT_SKIP_MODULES, quantization_config

    folder = save_gleellm(model, tmp_path / "m")
    loaded = load_gleellm(folder, quantization_config=quantization_config(4, skip_modules=DEFAULT_SKIP_MODULES))
    four_bit = [n for n, m in loaded.vlm.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and all("language_model" in n for n in four_bit)
    reference, quantized = _outputs(model, _batch(model, image)), _outputs(loaded, _batch(model, image))
    assert quantized[0].shape == reference[0].shape and torch.isfinite(quantized[0]).all()
    correlation = torch.corrcoef(torch.stack([reference[0].flatten(), quantized[0].flatten()]))[0, 1]
    assert correlation > 0.9, correlation
    assert loaded.generate(image, "Please segment the red circle.").objects is not None


def test_lora_glee_trains_only_its_adapters_and_saves_merged(image, tmp_path):
    model = make_model(glee_policy="lora").train()
    glee_trainable = [n for n, p in model.glee.named_parameters() if p.requires_grad]
    assert glee_trainable and all(".lora_" in n for n in glee_trainable)
    assert all(n.startswith("predictor.") for n in glee_trainable)  # the object decoder only
    out = model(_batch(model, image))
    out.loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for n, p in model.glee.named_parameters()
               if ".lora_B" in n)
    with torch.no_grad():
        for name, parameter in model.glee.named_parameters():
            if ".lora_B" in name:
                parameter.normal_(std=0.2)
    folder = save_gleellm(model, tmp_path / "m")
    loaded = load_gleellm(folder)
    fresh = [p for n, p in loaded.glee.named_parameters() if ".lora_B" in n]  # merged base + new zero adapters
    assert fresh and all(float(p.abs().max()) == 0 for p in fresh)
    batch = _batch(model, image)
    for a, b in zip(_outputs(model, batch), _outputs(loaded, batch)):
        assert torch.allclose(a, b, atol=1e-4)
