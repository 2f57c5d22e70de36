"""CLIP text tower and text prompts: state-dict layout, parity with the oracle (tiny and real size), masking."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from safetensors import safe_open
from transformers import CLIPTextModel

from glee_core.modeling.text_encoder import (
    clip_text_config,
    encode_categories,
    encode_expressions,
    mean_pool,
    text_hidden_states,
)
from glee_core.modeling.tokenizer import tokenize
from tests.conftest import assert_close, load_case, seeded_weights_path
from tests.glee_core.test_backbone_resnet import assert_matches_manifest

TINY = dict(hidden_size=32, intermediate_size=128, num_layers=2, num_heads=4)
TEXT_KEYS = ("text_encoder.", "lang_projection")


def build_text_model(state: dict[str, torch.Tensor], **config) -> CLIPTextModel:
    model = CLIPTextModel(clip_text_config(**config)).eval()
    model.load_state_dict({k[len("text_encoder."):]: v for k, v in state.items() if k.startswith("text_encoder.")})
    return model


@lru_cache(maxsize=1)
def lite_r50_text_model() -> tuple[CLIPTextModel, torch.Tensor]:
    """The real-size student text tower and lang_projection from the seeded lite-r50 weights (built once)."""
    with safe_open(str(seeded_weights_path("lite-r50")), "pt") as f:
        state = {k[len("glee."):]: f.get_tensor(k).float() for k in f.keys() if k[len("glee."):].startswith(TEXT_KEYS)}
    return build_text_model(state), state["lang_projection"]


def case_state(name: str, tiny_state: dict) -> tuple[CLIPTextModel, torch.Tensor]:
    if name.startswith("lite_r50"):
        return lite_r50_text_model()
    return build_text_model(tiny_state, **TINY), tiny_state["lang_projection"]


@pytest.mark.parametrize("preset, config", [("tiny", TINY), ("lite_r50", {}), ("plus_swinl", {}), ("pro_eva02l", {})])
@pytest.mark.parametrize("prefix", ["glee.text_encoder.", "glee.text_encoder_teacher."])
def test_state_dict_matches_manifest(preset, config, prefix):
    with torch.device("meta"):
        model = CLIPTextModel(clip_text_config(**config))
    assert_matches_manifest(model, preset, prefix)


@pytest.mark.parametrize("name", ["a_category_det", "d_video", "c_visual_box", "lite_r50_a_category"])
def test_categories_match_oracle(name, tiny_state):
    case = load_case(name)
    model, projection = case_state(name, tiny_state)
    ids, mask = case["text.input_ids"], case["text.attention_mask"]
    with torch.no_grad():
        assert_close(text_hidden_states(model, ids, mask), case["text.last_hidden_state"], name="last_hidden_state")
        out = encode_categories(model, projection, ids, mask)
    assert_close(out.class_embeddings, case["text.class_embeddings"], name="class_embeddings")
    if "fusion.lang_in" in case.tensors:
        batch = case["fusion.lang_in"].shape[0]
        assert case["fusion.lang_in_mask"].all()
        assert_close(out.fusion_tokens.expand(batch, -1, -1), case["fusion.lang_in"], name="lang_in")


@pytest.mark.parametrize("name", ["b_referring", "lite_r50_b_referring"])
def test_expressions_match_oracle(name, tiny_state):
    case = load_case(name)
    model, projection = case_state(name, tiny_state)
    ids, mask = tokenize([case.meta["prompts"]["expression"]])
    with torch.no_grad():
        assert_close(text_hidden_states(model, ids, mask), case["text.last_hidden_state"], name="last_hidden_state")
        out = encode_expressions(model, projection, ids, mask)
    assert_close(out.grounding_tokens, case["text.grounding_tokens"], name="grounding_tokens")
    assert torch.equal(out.grounding_pad_mask, case["text.grounding_nonzero_mask"])
    assert_close(out.grounding_class, case["text.grounding_class"], name="grounding_class")
    assert_close(out.fusion_tokens, case["fusion.lang_in"], name="lang_in")
    assert torch.equal(out.fusion_mask, case["fusion.lang_in_mask"])


def test_positional_call_and_causal_masking(tiny_state):
    """The official ``text_encoder(ids, mask)`` order still holds; BOS..EOS outputs ignore padding, PAD ones do not."""
    model = build_text_model(tiny_state, **TINY)
    ids, mask = tokenize(["red square", "the small blue ellipse on the left"])
    with torch.no_grad():
        keyword = text_hidden_states(model, ids, mask)
        positional = model(ids, mask).last_hidden_state
        unmasked = model(ids).last_hidden_state
    assert torch.equal(positional, keyword)
    valid = mask.bool()
    assert_close(unmasked[valid], keyword[valid], atol=1e-6, name="valid tokens without mask")
    assert (unmasked[~valid] - keyword[~valid]).abs().max() > 1e-2


def test_mean_pool_includes_bos_and_eos():
    tokens = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    pooled = mean_pool(tokens, torch.tensor([[1, 1, 1, 0]]))
    assert torch.equal(pooled, torch.tensor([[3.0, 4.0, 5.0]]))


def test_bfloat16_runs(tiny_state):
    model = build_text_model(tiny_state, **TINY).to(torch.bfloat16)
    ids, mask = tokenize(["red square", "car"])
    with torch.no_grad():
        out = encode_categories(model, tiny_state["lang_projection"].to(torch.bfloat16), ids, mask)
    assert out.class_embeddings.dtype == torch.bfloat16 and out.fusion_tokens.shape == (1, 7, 256)


def test_invalid_inputs_raise(tiny_state):
    model = build_text_model(tiny_state, **TINY)
    ids, mask = tokenize(["car"])
    with pytest.raises(ValueError, match="lang_projection"):
        encode_categories(model, torch.zeros(16, 256), ids, mask)
    with pytest.raises(ValueError, match="attention_mask shape"):
        encode_expressions(model, tiny_state["lang_projection"], ids, mask[:, :10])
    with pytest.raises(ValueError, match="all-zero"):
        encode_expressions(model, tiny_state["lang_projection"], ids, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="input_ids"):
        text_hidden_states(model, ids[0], mask[0])
