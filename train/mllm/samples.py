"""What every mLLM training source yields: one image, a conversation about it and the masks its ``[SEG]`` answer
tokens stand for. Sources are deterministic functions of an index, so a run resumes on exactly the samples it
would have drawn."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from mllm.objects import ObjectTokens

Proposer = Callable[[np.ndarray], "ObjectTokens"]
"""An image uint8 [H, W, 3] -> its object tokens (``ObjectTokens`` of one image, [1, K, ...])."""


@dataclass
class MllmSample:
    """``image`` uint8 [H, W, 3] RGB; ``turns`` (question, answer) pairs, the first question without the image
    placeholder (the model's prompt layout inserts it); ``masks`` bool [H, W], one per ``[SEG]`` in the answers,
    in order; ``source`` the name of the dataset it came from; ``meta`` free-form (ids, file names);
    ``objects`` the image's object tokens when the source precomputed them (a frozen GLEE gives the same every
    step; None: the model proposes them in its forward)."""

    image: np.ndarray
    turns: list[tuple[str, str]]
    masks: list[np.ndarray]
    source: str
    meta: dict = field(default_factory=dict)
    objects: "ObjectTokens | None" = None


class SampleSource(Protocol):
    """A dataset that turns any non-negative index into a sample (wrapping around its records)."""

    name: str

    def __len__(self) -> int: ...

    def sample(self, index: int) -> MllmSample: ...


@runtime_checkable
class ProposalConsumer(Protocol):
    """A source that can carry precomputed object tokens: the trainer hands it the model's proposer once the model
    is built (frozen GLEE only), and its samples then carry ``objects``. ``needs_proposer``: its conversations
    cite GLEE's proposals (``<objK>``), so training without a proposer is refused."""

    needs_proposer: bool

    def use_proposer(self, propose: Proposer) -> None: ...
