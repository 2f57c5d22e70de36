"""What :meth:`mllm.GleeLLM.generate` returns, and how an answer's text maps to its ``[SEG]`` and ``<objK>``."""
from __future__ import annotations

from dataclasses import dataclass, field

from glee_core.structures import Detections
from mllm.tokens import OBJECT_REF, SEG_TOKEN


@dataclass
class SegmentSpan:
    """One ``[SEG]`` of an answer: its character offsets, the phrase it closes, and GLEE's result.

    ``phrase`` is the answer text since the previous ``[SEG]`` (or the start), stripped of punctuation at the
    edges; ``detections`` holds one row (box, mask, score = GLEE's confidence, label = the phrase);
    ``object_index`` is the object token the ``[SEG]`` points at (``<objK>``), when the model has them.
    """

    start: int
    end: int
    phrase: str
    detections: Detections | None = None
    object_index: int | None = None


@dataclass
class MllmAnswer:
    """The answer to one question about one image.

    Attributes:
        text: the generated answer, special tokens kept (``[SEG]``, ``<obj3>``).
        segments: one per ``[SEG]``, in order.
        objects: GLEE's K object proposals shown to the LLM (row k = ``<objk>``), with masks.
        cited: object indices the answer cites, in order of appearance.
    """

    text: str
    segments: list[SegmentSpan] = field(default_factory=list)
    objects: Detections | None = None
    cited: list[int] = field(default_factory=list)

    @property
    def masks(self) -> list[Detections]:
        return [s.detections for s in self.segments if s.detections is not None]

    def cited_objects(self) -> Detections | None:
        if self.objects is None or not self.cited:
            return None
        return self.objects[[k for k in self.cited if k < len(self.objects)]]


def segment_spans(text: str) -> list[SegmentSpan]:
    """Spans of every ``[SEG]`` in ``text`` with the phrase each one closes."""
    spans, previous = [], 0
    start = text.find(SEG_TOKEN)
    while start >= 0:
        end = start + len(SEG_TOKEN)
        phrase = OBJECT_REF.sub("", text[previous:start]).strip(" ,.;:\n")
        spans.append(SegmentSpan(start, end, phrase))
        previous, start = end, text.find(SEG_TOKEN, end)
    return spans


def cited_indices(text: str) -> list[int]:
    """Object indices of ``<objK>`` tokens in ``text``, in order."""
    return [int(m.group(1)) for m in OBJECT_REF.finditer(text)]
