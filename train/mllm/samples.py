"""What every mLLM training source yields: one image, a conversation about it and the masks its ``[SEG]`` answer
tokens stand for. Sources are deterministic functions of an index, so a run resumes on exactly the samples it
would have drawn."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class MllmSample:
    """``image`` uint8 [H, W, 3] RGB; ``turns`` (question, answer) pairs, the first question without the image
    placeholder (the model's prompt layout inserts it); ``masks`` bool [H, W], one per ``[SEG]`` in the answers,
    in order; ``source`` the name of the dataset it came from; ``meta`` free-form (ids, file names)."""

    image: np.ndarray
    turns: list[tuple[str, str]]
    masks: list[np.ndarray]
    source: str
    meta: dict = field(default_factory=dict)


class SampleSource(Protocol):
    """A dataset that turns any non-negative index into a sample (wrapping around its records)."""

    name: str

    def __len__(self) -> int: ...

    def sample(self, index: int) -> MllmSample: ...
