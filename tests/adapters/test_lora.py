"""LoRA targets on tiny LLaVA, Qwen2-VL and GLEE: exactly the intended layers, analytic parameter counts,
merge equivalence, and the errors for patterns that match nothing or would be silently ignored."""
from __future__ import annotations

import re
import sys

import pytest
import torch

pytest.importorskip("peft")
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402

from adapters.lora import (  # noqa: E402
    GLEE_LORA_TARGETS,
    GLEE_SELF_ATTN_TARGETS,
    LLM_LORA_TARGETS,
    apply_lora,
    glee_lora_config,
    llm_lora_config,
    merge_lora,
    token_rows,
)
from adapters.prompt_tuning import prompt_tuning_config  # noqa: E402
from glee_core.modeling.glee import GleeModel  # noqa: E402
from tests.adapters.conftest import llava_batch, perturb_lora_b, tiny_llama, tiny_llava, tiny_qwen2vl  # noqa: E402

PEFT_PREFIX = "base_model.model."
LM_WRAPPED = {f"model.language_model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")}
LM_LORA_PARAMS = 2 * (8 * (64 + 64) + 8 * (64 + 32))
"""r=8, 2 layers: q_proj 64 -> 64 and v_proj 64 -> 32 (2 kv heads x 16); A is [r, in], B is [out, r]."""


def wrapped_names(model: torch.nn.Module) -> set[str]:
    return {name.removeprefix(PEFT_PREFIX) for name, module in model.named_modules()
            if isinstance(module, BaseTunerLayer)}


def trainable(model: torch.nn.Module) -> dict[str, int]:
    return {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}


def glee_images(seed: int = 0) -> torch.Tensor:
    """[1, 3, 64, 64] normalised-looking input: 64 + 16 + 4 + 1 feature positions >= the tiny preset's 40 queries."""
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("build", [tiny_llava, tiny_qwen2vl], ids=["llava", "qwen2vl"])
def test_llm_targets_are_the_language_model_q_and_v(build):
    model = apply_lora(build(), llm_lora_config())
    assert wrapped_names(model) == LM_WRAPPED
    params = trainable(model)
    assert all(".lora_A." in n or ".lora_B." in n for n in params)
    assert sum(params.values()) == LM_LORA_PARAMS == 3584


def test_llm_pattern_never_matches_vision_or_projector_names():
    for name in ("model.vision_tower.encoder.layers.0.self_attn.q_proj", "model.visual.blocks.0.attn.qkv",
                 "model.multi_modal_projector.linear_1", "glee.predictor.decoder.layers.0.cross_attn.value_proj",
                 "model.language_model.layers.0.self_attn.k_proj", "model.language_model.layers.0.self_attn.q_proj.x"):
        assert re.fullmatch(LLM_LORA_TARGETS, name) is None, name
    assert re.fullmatch(LLM_LORA_TARGETS, "language_model.model.layers.3.self_attn.v_proj")  # pre-v5 LLaVA naming


def test_glee_targets_are_decoder_and_heads_only():
    base = GleeModel.from_config("tiny").eval()
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = apply_lora(base, glee_lora_config(r=4))
    expected = {f"predictor.decoder.layers.{i}.{name}" for i in range(3)
                for name in ("cross_attn.value_proj", "cross_attn.output_proj", "linear1", "linear2")}
    expected |= {f"predictor.mask_embed.layers.{i}" for i in range(3)}
    expected |= {f"predictor.confidence_score.layers.{i}" for i in range(2)}
    expected |= {f"predictor.decoder.bbox_embed.0.layers.{i}" for i in range(3)}
    assert wrapped_names(model) == expected
    predictor = base.predictor
    assert predictor._bbox_embed is predictor.bbox_embed[2]
    assert isinstance(predictor._bbox_embed.layers[0], BaseTunerLayer), "the shared box MLP is wrapped for every alias"
    assert not isinstance(predictor.decoder.layers[0].self_attn, BaseTunerLayer)
    lora_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    analytic = sum(4 * (m.in_features + m.out_features) for m in lora_layers)
    params = trainable(model)
    assert set(n.split(".lora_")[0] for n in params) == {PEFT_PREFIX + n for n in expected}
    assert sum(params.values()) == analytic
    for name, value in base.named_parameters():
        top = name.split(".")[0]
        if top in ("backbone", "text_encoder", "text_encoder_teacher", "pixel_decoder", "lang_projection"):
            assert not value.requires_grad and torch.equal(value, before[name]), name


@pytest.mark.parametrize("targets, lora_layers", [(GLEE_LORA_TARGETS, 20),
                                                  (f"{GLEE_LORA_TARGETS}|{GLEE_SELF_ATTN_TARGETS}", 20 + 3 * 2)],
                         ids=["default", "with_self_attn"])
def test_glee_merge_matches_unmerged(targets, lora_layers):
    base = GleeModel.from_config("tiny").eval()
    images, names = glee_images(), ["cat", "dog", "red car"]
    with torch.no_grad():
        original = base(images, categories=names)
    model = apply_lora(base, glee_lora_config(r=4, target_modules=targets))
    assert perturb_lora_b(model) == lora_layers  # peft's MultiheadAttention LoRA also wraps its out_proj
    with torch.no_grad():
        adapted = model(images, categories=names)
    merged = merge_lora(model)
    assert isinstance(merged, GleeModel) and not wrapped_names(merged)
    with torch.no_grad():
        out = merged(images, categories=names)
    assert (adapted.pred_logits - original.pred_logits).abs().max() > 1e-2, "LoRA changed nothing: vacuous test"
    for field in ("pred_logits", "pred_boxes", "pred_masks", "pred_scores", "query_embeds"):
        assert torch.allclose(getattr(out, field), getattr(adapted, field), atol=1e-4, rtol=0), field


def test_llm_merge_matches_unmerged():
    batch = llava_batch()
    base = tiny_llava()
    with torch.no_grad():
        original = base(**batch).logits
    model = apply_lora(base, llm_lora_config())
    assert not any(m.training for m in model.modules()), "an eval-mode model must stay in eval mode (LoRA dropout off)"
    perturb_lora_b(model, std=0.5)
    with torch.no_grad():
        adapted = model(**batch).logits
    merged = merge_lora(model)
    assert type(merged).__name__ == "LlavaForConditionalGeneration" and not wrapped_names(merged)
    with torch.no_grad():
        out = merged(**batch).logits
    assert (adapted - original).abs().max() > 1e-2, "LoRA changed nothing: vacuous test"
    assert (out - adapted).abs().max() < 1e-4


def test_targets_can_be_overridden():
    model = apply_lora(tiny_llama(), llm_lora_config(r=2, target_modules=["q_proj", "o_proj"]))
    assert wrapped_names(model) == {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "o_proj")}
    assert sum(trainable(model).values()) == 2 * 2 * (2 * (64 + 64))


def test_pattern_matching_nothing_names_the_pattern():
    with pytest.raises(ValueError, match=r"matches no module of LlamaForCausalLM") as err:
        apply_lora(tiny_llama(), llm_lora_config())  # a plain LM has no `language_model` module
    assert LLM_LORA_TARGETS in str(err.value)
    with pytest.raises(ValueError) as err:
        apply_lora(tiny_llava(), glee_lora_config())
    assert GLEE_LORA_TARGETS in str(err.value)


def test_multihead_attention_out_proj_is_refused():
    """nn.MultiheadAttention reads out_proj.weight directly: LoRA there would train nothing yet change the merge."""
    model = GleeModel.from_config("tiny")
    with pytest.raises(ValueError, match=r"decoder\.layers\.0\.self_attn\.out_proj inside nn.MultiheadAttention"):
        apply_lora(model, glee_lora_config(target_modules=r".*self_attn\.out_proj"))
    assert not wrapped_names(model)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank r must be >= 1"):
        llm_lora_config(r=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        glee_lora_config(dropout=1.0)
    with pytest.raises(ValueError, match="needs a peft.LoraConfig"):
        apply_lora(tiny_llama(), prompt_tuning_config())
    with pytest.raises(ValueError, match="needs a peft.PeftModel"):
        merge_lora(tiny_llama())


def test_missing_peft_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` fail
    with pytest.raises(ImportError, match=r'pip install "gleekit\[mllm\]"'):
        llm_lora_config()


NEW_ROWS = [61, 63]
"""Two 'added' token ids of the tiny vocabulary (64)."""


def test_token_rows_name_the_embeddings_and_an_untied_head():
    assert token_rows(tiny_llava(), [63, 61, 63]) == {"model.language_model.embed_tokens": NEW_ROWS,
                                                      "lm_head": NEW_ROWS}
    tied = tiny_llama()
    tied.lm_head.weight = tied.model.embed_tokens.weight
    assert token_rows(tied, NEW_ROWS) == {"model.embed_tokens": NEW_ROWS}  # peft follows the tie itself
    with pytest.raises(ValueError, match="at least one token id"):
        token_rows(tied, [])
    with pytest.raises(ValueError, match=r"64 input embeddings; add the tokens and resize"):
        token_rows(tied, [3, 64])
    with pytest.raises(ValueError, match=r"\['lm_head'\] would train both in full .* and by rows"):
        llm_lora_config(modules_to_save=["lm_head"], trainable_token_indices=token_rows(tiny_llava(), NEW_ROWS))


def test_token_rows_train_only_those_rows_and_merge():
    batch = llava_batch()
    base = tiny_llava()
    embed, head = (base.get_input_embeddings().weight.clone(), base.get_output_embeddings().weight.clone())
    model = apply_lora(base, llm_lora_config(trainable_token_indices=token_rows(base, NEW_ROWS)))
    rows = {n: p.shape for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens" in n}
    assert sorted(rows.values()) == [(2, 64), (2, 64)], rows  # two rows each, not 2 x 64 x 64
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    ids = batch["input_ids"].clone()
    ids[:, -3:-1] = torch.tensor(NEW_ROWS)  # the last position feeds no loss
    model.train()
    model(**{**batch, "input_ids": ids}, labels=ids).loss.backward()
    optimizer.step()
    merged = merge_lora(model.eval())
    changed = lambda a, b: sorted((a - b).abs().sum(-1).nonzero().flatten().tolist())  # noqa: E731
    assert changed(merged.get_input_embeddings().weight, embed) == NEW_ROWS
    assert changed(merged.get_output_embeddings().weight, head) == NEW_ROWS
