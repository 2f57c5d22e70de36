"""``GleeLLMConfig``: what ties a VLM, a GLEE model and the projectors together (saved as JSON)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mllm.prompting import IMAGE_TOKEN, LLAVA_SYSTEM


MASK_SOURCES = ("glee", "pointer")


def check_mask_source(mask_source: str, num_objects: int) -> str:
    """``mask_source`` if it is one of :data:`MASK_SOURCES` that a model with ``num_objects`` object tokens can use."""
    if mask_source not in MASK_SOURCES:
        raise ValueError(f"mask_source must be one of {list(MASK_SOURCES)}, got {mask_source!r}")
    if mask_source == "pointer" and not num_objects:
        raise ValueError("mask_source 'pointer' needs object tokens to point at (num_objects > 0)")
    return mask_source


@dataclass
class LossWeights:
    """LISA's weights (token CE 1.0, mask BCE 2.0, mask Dice 0.5), GLEE's query selection and box L1, and the
    pointer loss (a ``[SEG]`` state picks, among the object tokens, the one showing its target)."""

    ce: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    select: float = 1.0
    box: float = 0.0
    pointer: float = 1.0


@dataclass
class GleeLLMConfig:
    """Settings of a :class:`mllm.GleeLLM`.

    Attributes:
        num_objects: K object tokens (GLEE's top-K queries) placed after the image; 0 disables them.
        object_categories: the category prompt GLEE proposes objects with.
        silhouette_size: each object token also carries its mask's shape inside its box, sampled on an S x S
            grid (:func:`mllm.objects.mask_silhouettes`); 0 leaves it out.
        object_class_scores: each object token also carries GLEE's probability for every one of
            ``object_categories`` (its recognition of the object, as All-Seeing's region tokens carry it), not
            only the best one: the LLM reads "which shape" from GLEE's classifier instead of learning it anew from
            the query.
        object_mentions: a ``<objk>`` token in a question or answer also carries object k's content (added to
            its embedding), so "What is <obj3>?" can be answered by reading the mention itself (as region
            tokens do in All-Seeing / GPT4RoI), not only through the object list.
        objects_after_question: place the object list after the first question instead of before it, so each
            object token (the LLM is causal) can weigh itself against the question.
        pointer_keys: what a ``[SEG]`` state is compared with to point at an object: ``contents`` (the
            projected object tokens) or ``slots`` (the LLM's last hidden states at the object slots — with
            ``objects_after_question``, question-aware).
        seg_prompt_tokens: L GLEE prompt tokens made from each ``[SEG]`` state.
        mask_source: where an answer's ``[SEG]`` mask comes from at inference: ``glee`` (LISA's path: GLEE run
            again, prompted with the projected ``[SEG]`` state) or ``pointer`` (the mask of the object token the
            ``[SEG]`` points at: no second GLEE run; needs object tokens). Training uses both.
        max_seg_tokens: at most this many ``[SEG]`` per answer (more raise).
        glee_policy: ``frozen``, ``lora`` or ``full`` (see :mod:`adapters.freeze`).
        system_prompt: text before the first ``USER:``.
        image_placeholder: the text the VLM's processor expands into image tokens (LLaVA ``<image>``; Qwen2-VL
            ``<|vision_start|><|image_pad|><|vision_end|>``); questions always write ``<image>``.
        max_length: token limit of a conversation, image tokens included.
        max_new_tokens: generation length limit.
        train_mask_prompts: in training, at most this many ``[SEG]`` of a batch (drawn at random) go through
            GLEE for the mask losses (the costly part); CE and pointer losses use every ``[SEG]``. None = all.
        base_vlm / base_glee: the ids or paths the model was built from (checked again at loading).
        vlm_fingerprint: model type, hidden size and layer count of the base VLM, to refuse a mismatched base.
    """

    num_objects: int = 10
    object_categories: list[str] = field(default_factory=lambda: ["object"])
    silhouette_size: int = 8
    object_class_scores: bool = False
    object_mentions: bool = True
    objects_after_question: bool = False
    pointer_keys: str = "contents"
    seg_prompt_tokens: int = 1
    mask_source: str = "glee"
    max_seg_tokens: int = 8
    glee_policy: str = "frozen"
    system_prompt: str = LLAVA_SYSTEM
    image_placeholder: str = IMAGE_TOKEN
    max_length: int = 512
    max_new_tokens: int = 64
    train_mask_prompts: int | None = None
    loss: LossWeights = field(default_factory=LossWeights)
    base_vlm: str | None = None
    base_glee: str | None = None
    vlm_fingerprint: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = LossWeights(**self.loss)
        if self.pointer_keys not in ("contents", "slots"):
            raise ValueError(f"pointer_keys must be contents or slots, got {self.pointer_keys!r}")
        check_mask_source(self.mask_source, self.num_objects)
        if self.silhouette_size < 0:
            raise ValueError(f"silhouette_size must be >= 0, got {self.silhouette_size}")
        if self.num_objects < 0 or self.seg_prompt_tokens < 1 or self.max_seg_tokens < 1:
            raise ValueError(f"need num_objects >= 0, seg_prompt_tokens >= 1 and max_seg_tokens >= 1, got "
                             f"{self.num_objects}, {self.seg_prompt_tokens}, {self.max_seg_tokens}")
        if self.glee_policy not in ("frozen", "lora", "full"):
            raise ValueError(f"glee_policy must be frozen, lora or full, got {self.glee_policy!r}")
        if self.num_objects and not self.object_categories:
            raise ValueError("object_categories is empty; GLEE needs a category prompt to propose objects")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GleeLLMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GleeLLMConfig keys {unknown}; known: {sorted(known)}")
        return cls(**data)
