"""Special tokens of the GLEE-LLM and the guarantee that each stays one token.

* ``[SEG]`` — the answer asks GLEE for a mask here; its hidden state becomes a GLEE prompt.
* ``<objects>`` — a placeholder the user may write; it expands to the object list
  ``<obj0><object><obj1><object>…`` (``<object>`` slots carry projected GLEE queries, ``<objK>`` are the
  index tokens an answer or a question uses to cite object K).

LISA's best-known failure is a tokenizer that splits ``[SEG]`` (``[▁, [SEG]]``: the space piece is taken for
the token and every mask doubles); :func:`add_special_tokens` refuses a tokenizer that does that.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

IMAGE_TOKEN = "<image>"
"""Where the image goes in LLaVA-format text (conversation files, the user's question); not gleekit's own."""
SEG_TOKEN = "[SEG]"
OBJECT_SLOT = "<object>"
OBJECTS_PLACEHOLDER = "<objects>"
OBJECT_REF = re.compile(r"<obj(\d+)>")


def object_ref(index: int) -> str:
    """The token citing object ``index``: ``<obj3>``."""
    return f"<obj{index}>"


class TokenizerError(ValueError):
    """A tokenizer cannot carry the special tokens as single tokens."""


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the special tokens in one tokenizer."""

    seg: int
    object_slot: int
    object_refs: tuple[int, ...]  # object_refs[k] is the id of <objk>

    def ref_index(self, token_id: int) -> int | None:
        """Object index cited by ``token_id``, or None."""
        try:
            return self.object_refs.index(token_id)
        except ValueError:
            return None


def special_tokens(num_objects: int) -> list[str]:
    return [SEG_TOKEN, OBJECT_SLOT] + [object_ref(k) for k in range(num_objects)]


def add_special_tokens(tokenizer, num_objects: int) -> SpecialTokenIds:
    """Add ``[SEG]``, ``<object>`` and ``<obj0..K-1>`` (no-op for those present) and check each is one token.

    Returns their ids; the caller resizes the LLM's embeddings to ``len(tokenizer)``. Raises
    :class:`TokenizerError` naming the pieces when a token does not encode to exactly its own id, alone or
    in running text.
    """
    tokens = special_tokens(num_objects)
    tokenizer.add_tokens(tokens, special_tokens=True)
    ids = {t: check_single_token(tokenizer, t) for t in tokens}
    return SpecialTokenIds(ids[SEG_TOKEN], ids[OBJECT_SLOT], tuple(ids[object_ref(k)] for k in range(num_objects)))


def check_single_token(tokenizer, token: str) -> int:
    """The id of ``token`` after verifying it encodes to exactly that one id alone and inside text."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise TokenizerError(f"{token!r} is not in the tokenizer's vocabulary; add it with add_special_tokens()")
    alone = tokenizer(token, add_special_tokens=False)["input_ids"]
    if alone != [token_id]:
        raise TokenizerError(
            f"{token!r} encodes to {alone} ({tokenizer.convert_ids_to_tokens(alone)}), not the single id {token_id}: "
            "this tokenizer splits it (LISA's doubled-mask bug). Add it as a special token of this tokenizer")
    for text in (f"Sure, {token}.", f"a{token}b {token} {token}"):
        found = tokenizer(text, add_special_tokens=False)["input_ids"].count(token_id)
        if found != text.count(token):
            raise TokenizerError(f"{token!r} appears {text.count(token)} times in {text!r} but encodes to {found} ids")
    return token_id
