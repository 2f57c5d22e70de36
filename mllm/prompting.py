"""Conversation layout and tokenization: question/answer turns -> input ids, labels and vision inputs.

The layout is LLaVA-v1's (LISA's ``llava_v1``): ``{system} USER: {question} ASSISTANT: {answer}{eos}`` per
turn. Only answers and their end-of-sequence token are supervised. The ``<image>`` of the first turn is
expanded by the VLM's own processor (which also returns ``pixel_values`` and whatever else the family
needs), and is followed by the object list ``<obj0><object>…`` when the model uses object tokens. Each
segment is tokenized on its own and concatenated, so labels never depend on a length computation
(LISA's off-by-one under other tokenizer versions cannot happen).

Some processors also return per-token multimodal types (Gemma3's ``token_type_ids``, which give its image
tokens bidirectional attention; Qwen2-VL's ``mm_token_type_ids``). Those would cover the first segment only,
so they are left out of the vision inputs and rebuilt for whole sequences by :func:`token_type_inputs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from mllm.tokens import IMAGE_TOKEN, OBJECT_SLOT, OBJECTS_PLACEHOLDER, SEG_TOKEN, object_ref

IGNORE_INDEX = -100
LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.")


@dataclass
class EncodedConversation:
    """One tokenized conversation: ``input_ids`` / ``labels`` [T] (labels -100 where unsupervised), and the
    processor's vision inputs for its image (``pixel_values`` etc., each with a leading image dimension)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    vision: dict[str, torch.Tensor] = field(default_factory=dict)


def object_list(num_objects: int) -> str:
    """``<obj0><object><obj1><object>…``: the text the ``<objects>`` placeholder expands to."""
    return "".join(object_ref(k) + OBJECT_SLOT for k in range(num_objects))


def token_type_key(processor: Any) -> str | None:
    """The name under which ``processor`` returns per-token multimodal types (0 text, 1 image, ...; Gemma3
    ``token_type_ids``, Qwen2-VL ``mm_token_type_ids``), or None when it returns none (LLaVA)."""
    if not getattr(processor, "return_mm_token_type_ids", False) or not hasattr(processor, "create_mm_token_type_ids"):
        return None
    names = list(getattr(processor, "model_input_names", []))
    return next((name for name in ("mm_token_type_ids", "token_type_ids") if name in names), None)


def token_type_inputs(processor: Any, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-token multimodal types of whole sequences ``input_ids`` [B, T] (padding included), by the
    processor's own rule, as the keyword the VLM takes; ``{}`` for a processor without them."""
    key = token_type_key(processor)
    if key is None:
        return {}
    types = np.asarray(processor.create_mm_token_type_ids(input_ids.tolist()), dtype=np.int64).reshape(input_ids.shape)
    return {key: torch.from_numpy(types).to(input_ids.device)}


def user_text(question: str, num_objects: int, first_turn: bool, image_placeholder: str = IMAGE_TOKEN,
              objects_after_question: bool = False) -> str:
    """A question with the image (``image_placeholder``: the text the VLM's processor expands into image
    tokens) at the front of the first turn and the object list after the image (or after the question).
    Users write ``<image>`` or nothing."""
    if IMAGE_TOKEN in question and not first_turn:
        raise ValueError(f"{IMAGE_TOKEN} may only appear in the first question")
    for token in (SEG_TOKEN, OBJECT_SLOT):
        if token in question:
            raise ValueError(f"the question contains {token}, a token gleekit places itself ({SEG_TOKEN}: a mask "
                             f"in an answer, {OBJECT_SLOT}: an object's content); write it differently")
    if first_turn:
        question = question.replace(IMAGE_TOKEN, "").strip()
        if not num_objects:
            question = f"{image_placeholder}\n{question}"
        elif objects_after_question:
            question = f"{image_placeholder}\n{question}\n{OBJECTS_PLACEHOLDER}"
        else:
            question = f"{image_placeholder}\n{OBJECTS_PLACEHOLDER}\n{question}"
    if question.count(OBJECTS_PLACEHOLDER) > 1:
        raise ValueError(f"{OBJECTS_PLACEHOLDER} appears more than once")
    return question.replace(OBJECTS_PLACEHOLDER, object_list(num_objects))


def encode_conversation(
    processor: Any,
    image: Any,
    turns: Sequence[tuple[str, str | None]],
    *,
    num_objects: int,
    system: str = LLAVA_SYSTEM,
    max_length: int | None = None,
    image_placeholder: str = IMAGE_TOKEN,
    objects_after_question: bool = False,
) -> EncodedConversation:
    """Tokenize ``turns`` [(question, answer)] about ``image`` (PIL image or HWC uint8 array).

    The last answer may be None: the prompt then ends with ``ASSISTANT:`` for generation. ``max_length``
    bounds the token count (image tokens included) and raises rather than truncating an answer away.
    """
    if not turns:
        raise ValueError("a conversation needs at least one (question, answer) turn")
    if image is None:
        if any(answer and SEG_TOKEN in answer for _, answer in turns):
            raise ValueError(f"an answer with {SEG_TOKEN} needs an image: its mask comes from GLEE on that image")
        raise ValueError("a GleeLLM conversation is about one image; give it (text-only chat is the VLM's own job)")
    tokenizer = processor.tokenizer
    eos = tokenizer.eos_token
    if eos is None:
        raise ValueError("the tokenizer has no eos_token; answers need an end-of-sequence token")
    ids: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    vision: dict[str, torch.Tensor] = {}

    def add(text: str, supervised: bool) -> None:
        encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        ids.append(encoded)
        labels.append(encoded.clone() if supervised else torch.full_like(encoded, IGNORE_INDEX))

    for index, (question, answer) in enumerate(turns):
        if answer is None and index != len(turns) - 1:
            raise ValueError("only the last turn may leave its answer empty")
        text = user_text(question, num_objects, index == 0, image_placeholder, objects_after_question)
        prompt = f"USER: {text} ASSISTANT:"
        if index == 0:
            head = f"{system} {prompt}" if system else prompt
            out = processor(images=[image], text=[head], return_tensors="pt")
            first = out["input_ids"][0]
            ids.append(first)
            labels.append(torch.full_like(first, IGNORE_INDEX))
            types = token_type_key(processor)
            if types in out and not torch.equal(out[types], token_type_inputs(processor, out["input_ids"])[types]):
                raise ValueError(f"the processor's {types} differ from its create_mm_token_type_ids(); gleekit "
                                 "rebuilds them over the whole conversation with that method, so it cannot use them")
            vision = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask", types)}
        else:
            add(" " + prompt, supervised=False)
        if answer is not None:
            add(f" {answer}{eos}", supervised=True)
    input_ids, label_ids = torch.cat(ids), torch.cat(labels)
    if max_length is not None and len(input_ids) > max_length:
        raise ValueError(f"the conversation is {len(input_ids)} tokens long (image tokens included), over "
                         f"max_length={max_length}; shorten it or raise max_length")
    return EncodedConversation(input_ids, label_ids, vision)
