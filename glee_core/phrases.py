"""Phrases of a caption: found automatically, and mapped to CLIP token positions.

:func:`find_phrases` is a deliberately simple, dependency-free chunker (no tagger model to download):
a caption is cut at punctuation and at *separator words* (prepositions, conjunctions, common verbs and
pronouns, listed below); each remaining run of words, without its leading determiners, is one phrase.
"a red circle next to two blue squares" -> "red circle", "two blue squares". Give spans yourself when
the rule does not fit your captions.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

SEPARATORS = frozenset("""
about above across after against along among around at behind below beneath beside besides between beyond by
down during except for from in inside into near next of off on onto opposite out outside over past through to
toward towards under underneath until up upon via with within without
and or but nor so yet than then while whereas because if although though as like
is are was were be been being am has have had having do does did can could will would shall should may might
must shows show showing contains contain containing holds holding sits sitting lies lying stands standing
it its they them their there here this that these those which who whom whose what where when how i you we he
she his her my your our me us him
""".split())
DETERMINERS = frozenset("a an the some any each every another".split())
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_BREAK = re.compile(r"[.,;:!?()\[\]\"]")


def find_phrases(caption: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` (end exclusive) of the noun-phrase-like runs of ``caption``."""
    spans: list[tuple[int, int]] = []
    run: list[re.Match] = []

    def close() -> None:
        words = list(run)
        while words and words[0].group().lower() in DETERMINERS:
            words.pop(0)
        if words:
            spans.append((words[0].start(), words[-1].end()))
        run.clear()

    position = 0
    for word in _WORD.finditer(caption):
        if _BREAK.search(caption, position, word.start()):
            close()
        position = word.end()
        if word.group().lower() in SEPARATORS:
            close()
        else:
            run.append(word)
    close()
    return spans


def check_spans(caption: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Validated spans: inside the caption, non-blank, on word boundaries, not overlapping (any order)."""
    checked = []
    for span in spans:
        try:
            start, end = (int(v) for v in span)
        except (TypeError, ValueError):
            raise ValueError(f"a span must be a (start, end) pair of character offsets, got {span!r}") from None
        if not 0 <= start < end <= len(caption) or not caption[start:end].strip():
            raise ValueError(f"span ({start}, {end}) must select non-blank text inside the caption "
                             f"of length {len(caption)}")
        if (start > 0 and caption[start - 1].isalnum() and caption[start].isalnum()) or (
                end < len(caption) and caption[end - 1].isalnum() and caption[end].isalnum()):
            raise ValueError(f"span ({start}, {end}) = {caption[start:end]!r} cuts a word; spans must start and "
                             "end on word boundaries")
        checked.append((start, end))
    for (s1, e1), (s2, e2) in zip(sorted(checked), sorted(checked)[1:]):
        if s2 < e1:
            raise ValueError(f"spans ({s1}, {e1}) and ({s2}, {e2}) overlap: {caption[s1:e1]!r} / {caption[s2:e2]!r}")
    return checked


def token_spans(caption: str, spans: Sequence[tuple[int, int]], max_length: int) -> list[tuple[int, int]]:
    """CLIP token positions ``[a, b)`` of each character span in the tokenized caption (BOS at position 0).

    CLIP's tokenizer splits words before BPE, so the tokens of ``caption[:start]`` are a prefix of the
    caption's tokens when ``start`` is a word boundary (:func:`check_spans`).
    """
    from glee_core.modeling.tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else 0

    positions = []
    for start, end in spans:
        first, last = 1 + count(caption[:start]), 1 + count(caption[:end])
        if last > max_length - 1:
            raise ValueError(f"phrase {caption[start:end]!r} lies beyond the first {max_length - 2} tokens of the "
                             "caption, where the text encoder truncates it; shorten the caption")
        positions.append((first, last))
    return positions
