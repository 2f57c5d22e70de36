"""[SEG] and object tokens stay single tokens in every tokenizer family (LISA's doubled-mask bug)."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mllm.tiny import word_tokenizer
from mllm.tokens import SEG_TOKEN, TokenizerError, add_special_tokens, check_single_token

CORPUS = ["Sure, it is the red circle.", "Please segment the blue star left of the square."] * 20


def _fast(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>")


def byte_level_bpe() -> PreTrainedTokenizerFast:  # GPT-2 / Qwen / LLaMA-3 family
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<pad>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _fast(tk)


def sentencepiece_like() -> PreTrainedTokenizerFast:  # LLaMA-1/2 family: Metaspace "▁" pieces
    tk = Tokenizer(models.Unigram())
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tk.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=120, unk_token="<unk>",
                                                           special_tokens=["<unk>", "<pad>", "<s>", "</s>"]))
    return _fast(tk)


def wordpiece() -> PreTrainedTokenizerFast:  # BERT family
    tk = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece()
    tk.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200,
                                                             special_tokens=["<unk>", "<pad>", "<s>", "</s>"]))
    return _fast(tk)


FAMILIES = {"word_level": lambda: word_tokenizer(CORPUS), "byte_level_bpe": byte_level_bpe,
            "sentencepiece_like": sentencepiece_like, "wordpiece": wordpiece}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_special_tokens_are_single_in_every_family(family):
    tokenizer = FAMILIES[family]()
    before = len(tokenizer)
    ids = add_special_tokens(tokenizer, num_objects=3)
    assert len(tokenizer) == before + 5  # [SEG], <object>, <obj0..2>
    assert len({ids.seg, ids.object_slot, *ids.object_refs}) == 5
    text = "Sure, the circle [SEG] and <obj2> the star[SEG]."
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert encoded.count(ids.seg) == 2
    assert encoded.count(ids.object_refs[2]) == 1
    assert tokenizer(SEG_TOKEN, add_special_tokens=False)["input_ids"] == [ids.seg]  # no stray "▁" piece
    assert ids.ref_index(ids.object_refs[1]) == 1 and ids.ref_index(ids.seg) is None
    assert add_special_tokens(tokenizer, num_objects=3) == ids  # idempotent


def test_token_in_vocabulary_but_split_by_pre_tokenizer_is_refused():
    tk = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "[SEG]": 1, "[": 2, "SEG": 3, "]": 4}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()  # cuts "[SEG]" into "[", "SEG", "]"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    with pytest.raises(TokenizerError, match=r"encodes to \[2, 3, 4\].*splits it"):
        check_single_token(tokenizer, SEG_TOKEN)


def test_missing_token_is_reported():
    with pytest.raises(TokenizerError, match="not in the tokenizer's vocabulary"):
        check_single_token(word_tokenizer(CORPUS), SEG_TOKEN)
