"""benchmarks/mllm_memory.py: exact meta-device counts, byte formulas, and the LISA-settings verdicts (CPU, fast)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mllm_memory.py"
GIB = 2**30


@pytest.fixture(scope="module")
def mm():
    spec = importlib.util.spec_from_file_location("mllm_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def lisa(mm):
    return mm.Setup()  # 7B, CLIP-L/14@224, seq 512, micro-batch 2, LoRA r=8, full embed/lm_head, GLEE-Lite@1024


def test_meta_llm_count_is_the_llama_7b_formula(mm):
    plain = mm.Setup(added_tokens=0)  # the 32000-token LLaMA vocabulary
    counts = mm.count_parameters(plain)
    assert counts.lm_total == mm.llama_params_formula(4096, 11008, 32, 32000) == 6_738_415_616
    assert counts.lm_linear == 32 * (4 * 4096**2 + 3 * 4096 * 11008)
    assert counts.embed == counts.lm_head == 32000 * 4096
    assert counts.norms == 65 * 4096
    lisa = mm.count_parameters(mm.Setup())  # + [SEG], <im_start>, <im_end>
    assert lisa.lm_total - counts.lm_total == 2 * 3 * 4096
    assert lisa.vision == 303_179_776  # CLIP ViT-L/14 vision model at 224 px
    assert lisa.projector == 1024 * 4096 + 4096  # LISA / LLaVA v1: one Linear


def test_lora_count_matches_lisa_reference(mm):
    assert mm.count_parameters(mm.Setup()).lora == 32 * 2 * 8 * (4096 + 4096)
    assert mm.count_parameters(mm.Setup(scale="13b")).lora == 6_553_600  # LISA.md §8, 13B


def test_weight_bytes_order_and_nf4_overhead(mm, lisa):
    counts = mm.count_parameters(lisa)
    fp16, int8, nf4 = (mm.weight_bytes(counts, m)["lm_linear"] for m in ("fp16", "int8", "nf4"))
    assert nf4 < int8 < fp16
    assert fp16 == 2 * counts.lm_linear
    assert mm.NF4_BITS - 4 == pytest.approx(0.127, abs=1e-3)
    assert nf4 / counts.lm_linear == pytest.approx(0.5 + 0.127 / 8, rel=1e-3)
    totals = [mm.computed(lisa, m, "inference", counts)["weights"] for m in ("fp16", "int8", "nf4")]
    assert totals[2] < totals[1] < totals[0]


def test_lisa_qlora_step_fits_24gib_and_fp16_inference_does_not_fit_small_cards(mm, lisa):
    counts = mm.count_parameters(lisa)
    qlora = mm.computed(lisa, "nf4", "train+ckpt", counts)  # LISA trains with gradient checkpointing
    assert qlora["total"] < 24 * GIB
    assert mm.fits(qlora["total"], 24.0)
    fp16_infer = mm.computed(lisa, "fp16", "inference", counts)
    assert fp16_infer["total"] >= 13 * GIB
    assert fp16_infer["kv_cache"] == 2 * 2 * 32 * 512 * 4096  # k and v, fp16, batch 1 x 512 positions
    # training only the added tokens' rows drops the 14 B/param state of 2 x 32003 x 4096 rows
    new = mm.computed(mm.Setup(train_rows="new"), "nf4", "train+ckpt", counts)
    assert qlora["train_state"] - new["train_state"] > 3.4 * GIB
    # checkpointing never costs memory
    for mode in mm.MODES:
        assert mm.computed(lisa, mode, "train+ckpt", counts)["total"] < mm.computed(lisa, mode, "train", counts)["total"]


def _saved_bytes(num_layers: int, hidden: int, intermediate: int, heads: int, tokens: tuple[int, int]) -> int:
    """Bytes of distinct storages autograd saves in a LoRA(q, v) LLaMA forward (parameters excluded)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=num_layers,
                         num_attention_heads=heads, num_key_value_heads=heads, vocab_size=128,
                         attn_implementation="sdpa")
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"]))
    model.train()
    params = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    ids = torch.randint(0, 128, tokens)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


def test_layer_activation_formula_matches_autograd(mm):
    """One more decoder layer adds exactly the formula's bytes per token (CPU: dropout keeps an fp32 mask)."""
    hidden, intermediate, heads, tokens = 64, 176, 4, (2, 16)
    extra = (_saved_bytes(3, hidden, intermediate, heads, tokens) - _saved_bytes(2, hidden, intermediate, heads, tokens))
    mm.SCALES["_test"] = mm.LLMSize(hidden, intermediate, 2, heads)
    try:
        setup = mm.Setup(scale="_test", dropout_mask_bytes=4)
        assert extra == mm.llm_layer_saved_bytes(setup, "fp16") * tokens[0] * tokens[1]
    finally:
        del mm.SCALES["_test"]


def test_measure_without_cuda_prints_message_and_computed_table(mm, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "report.json"
    mm.main(["--measure", "--json", str(out)])
    text = capsys.readouterr().out
    assert "needs a CUDA GPU" in text and "computed table only" in text
    assert "nf4" in text and "Method" in text
    report = json.loads(out.read_text())
    assert report["measured"] == {} and report["seq_len"] == 512
    assert set(report["computed"]) == {f"{m}/{p}" for m in mm.MODES for p in mm.PHASES}
