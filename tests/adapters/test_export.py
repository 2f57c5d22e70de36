"""export_merged: merged LoRA folders that reload without peft and reproduce the adapted outputs."""
from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast

pytest.importorskip("peft")
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402

from adapters.export import export_merged  # noqa: E402
from adapters.lora import apply_lora, glee_lora_config, llm_lora_config  # noqa: E402
from glee_core.modeling.glee import GleeModel  # noqa: E402
from tests.adapters.conftest import llava_batch, perturb_lora_b, tiny_llava, word_tokenizer  # noqa: E402

ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"}


def test_llava_export_reloads_without_peft(tmp_path):
    batch = llava_batch()
    model = apply_lora(tiny_llava(), llm_lora_config(modules_to_save=["lm_head"]))
    perturb_lora_b(model, std=0.5)
    with torch.no_grad():
        model.base_model.model.lm_head.modules_to_save["default"].weight.mul_(2.0)  # a trained full copy
        expected = model(**batch).logits
    out = export_merged(model, tmp_path / "merged", tokenizer=word_tokenizer())
    assert out == tmp_path / "merged"
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files and not files & ADAPTER_FILES
    reloaded = LlavaForConditionalGeneration.from_pretrained(out).eval()
    assert not any(isinstance(m, BaseTunerLayer) for m in reloaded.modules())
    with torch.no_grad():
        logits = reloaded(**batch).logits
    assert (logits - expected).abs().max() < 1e-4
    assert PreTrainedTokenizerFast.from_pretrained(out)("segment the dog")["input_ids"] == [4, 5, 6]


def test_glee_export_reloads_with_glee_from_pretrained(tmp_path):
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model = apply_lora(GleeModel.from_config("tiny").eval(), glee_lora_config(r=4))
    perturb_lora_b(model)
    with torch.no_grad():
        expected = model(images, categories=["cat", "dog"])
    out = export_merged(model, tmp_path / "glee")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    reloaded = GleeModel.from_pretrained(out)
    with torch.no_grad():
        got = reloaded(images, categories=["cat", "dog"])
    for field in ("pred_logits", "pred_boxes", "pred_masks", "query_embeds"):
        assert torch.allclose(getattr(got, field), getattr(expected, field), atol=1e-4, rtol=0), field


def test_export_errors(tmp_path):
    with pytest.raises(ValueError, match="needs a peft.PeftModel"):
        export_merged(tiny_llava(), tmp_path / "x")
    model = apply_lora(GleeModel.from_config("tiny"), glee_lora_config())
    with pytest.raises(ValueError, match="no tokenizer or processor"):
        export_merged(model, tmp_path / "y", tokenizer=word_tokenizer())
    assert not (tmp_path / "y").exists()
    assert any(isinstance(m, BaseTunerLayer) for m in model.modules()), "a refused export must not merge"
