"""Offline CLIP BPE tokenizer, set up exactly as the official GLEE text branch.

The vocabulary is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` shipped as package data
(``glee_core/assets``, MIT, see ``LICENSE-CLIP-BPE.txt``); no network or Hugging Face hub access is
needed. Sequences are ``<|startoftext|>`` (49406), the BPE ids, ``<|endoftext|>`` (49407), padded with
49407 to ``max_length`` (77) and truncated there; the attention mask is 1 from BOS to EOS inclusive.
"""
from __future__ import annotations

import gzip
import warnings
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import torch
from transformers import CLIPTokenizer

CONTEXT_LENGTH = 77
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
PAD_TOKEN_ID = EOS_TOKEN_ID
VOCAB_SIZE = 49408
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable character map, in byte-table order (256 characters)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = 0
    chars = {}
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in printable] + [chars[b] for b in range(256) if b not in printable]


@lru_cache(maxsize=1)
def load_clip_tokenizer() -> CLIPTokenizer:
    """The CLIP tokenizer built from the packaged BPE file (cached; 49408 tokens, 48894 merges)."""
    raw = gzip.decompress((resources.files("glee_core") / "assets" / _VOCAB_FILE).read_bytes()).decode("utf-8")
    merges = [tuple(line.split()) for line in raw.split("\n")[1 : _NUM_MERGES + 1]]
    base = _bytes_to_unicode()
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tokenizer.add_special_tokens({"cls_token": tokenizer.eos_token})
    if len(tokenizer) != VOCAB_SIZE or tokenizer.bos_token_id != BOS_TOKEN_ID or tokenizer.pad_token_id != PAD_TOKEN_ID:
        raise RuntimeError(f"corrupt CLIP vocabulary {_VOCAB_FILE}: {len(tokenizer)} tokens")
    return tokenizer


def tokenize(texts: Sequence[str], max_length: int = CONTEXT_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode N texts -> (input_ids [N, max_length] int64, attention_mask [N, max_length] int64).

    Texts longer than ``max_length`` tokens (BOS and EOS included) are truncated to BOS + the first
    ``max_length - 2`` BPE tokens + EOS, as the official code does; a warning says so.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts is empty: give at least one category name or expression")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"texts[{i}] is empty or not a string: {text!r}")
    if not 2 <= max_length <= CONTEXT_LENGTH:
        raise ValueError(f"max_length must be in [2, {CONTEXT_LENGTH}], got {max_length}")
    tokenizer = load_clip_tokenizer()
    lengths = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
    if max(lengths) > max_length:
        warnings.warn(f"text longer than {max_length} CLIP tokens truncated", stacklevel=2)
    encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return encoded["input_ids"].long(), encoded["attention_mask"].long()
