"""Offline CLIP tokenizer: ids and masks against every fixture, truncation and input validation."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from glee_core.modeling.tokenizer import CONTEXT_LENGTH, EOS_TOKEN_ID, load_clip_tokenizer, tokenize
from tests.conftest import CASES_DIR, REAL_CASES_DIR, load_case


def case_json_paths() -> dict[str, Path]:
    """Every fixture's case.json (none when the reference is absent: the parametrized test is skipped)."""
    return {p.parent.name: p for root in (CASES_DIR, REAL_CASES_DIR) for p in sorted(root.glob("*/case.json"))}


def prompt_texts(meta: dict) -> list[str]:
    prompts = meta["prompts"]
    if "categories" in prompts:
        return prompts["categories"]
    if "expression" in prompts:
        return [prompts["expression"]] * meta["batch"]
    return prompts["category_list"]


@pytest.mark.parametrize("name", sorted(case_json_paths()))
def test_token_ids_match_case_json(name):
    meta = json.loads(case_json_paths()[name].read_text())
    ids, mask = tokenize(prompt_texts(meta))
    assert [row[m.bool()].tolist() for row, m in zip(ids, mask)] == meta["token_ids"]


@pytest.mark.parametrize("name", ["a_category_det", "b_referring", "c_visual_point", "d_video", "lite_r50_b_referring"])
def test_tensors_match_fixture(name):
    case = load_case(name)
    ids, mask = tokenize(prompt_texts(case.meta))
    assert ids.dtype == mask.dtype == torch.int64
    assert torch.equal(ids, case["text.input_ids"])
    assert torch.equal(mask, case["text.attention_mask"])


def test_known_sentences_and_padding():
    ids, mask = tokenize(["a photo of a cat.", "the small blue ellipse on the left"])
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert ids[1, :10].tolist() == [49406, 518, 2442, 1746, 3367, 5423, 525, 518, 1823, 49407]
    assert mask.sum(1).tolist() == [8, 10]
    assert (ids[0, 8:] == EOS_TOKEN_ID).all() and ids.shape == (2, CONTEXT_LENGTH)


def test_cached_and_special_tokens():
    tokenizer = load_clip_tokenizer()
    assert tokenizer is load_clip_tokenizer()
    assert len(tokenizer) == 49408 and tokenizer.cls_token == tokenizer.eos_token == "<|endoftext|>"


def test_long_text_truncated_with_warning():
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = tokenize(["word " * 100])
    assert mask.sum().item() == CONTEXT_LENGTH
    assert ids[0, 0].item() == 49406 and ids[0, -1].item() == EOS_TOKEN_ID
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(["word " * 75])


@pytest.mark.parametrize("texts", [[], [""], ["ok", "   "], "a string", [3]])
def test_invalid_texts_raise(texts):
    with pytest.raises(ValueError):
        tokenize(texts)


def test_invalid_max_length_raises():
    with pytest.raises(ValueError, match="max_length"):
        tokenize(["car"], max_length=78)
