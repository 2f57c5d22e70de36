"""Segmentation conversations on shapeworld scenes for the GLEE-LLM (LISA-style prompts, ``[SEG]`` answers).

Kinds of conversation, one question each:

* ``reasoning`` — a reasoning query (``reasoning_queries``) as a long question or LISA's short template; the
  answer has one ``[SEG]`` per target, targets ordered left to right.
* ``referring`` — "Please segment the red circle left of the star in this image." -> one ``[SEG]``.
* ``pair`` — two referring expressions in one question; the answer names each before its ``[SEG]``.
* ``caption`` — region recognition through object tokens: "What is <obj3>?" -> "A red circle." (needs GLEE's
  proposal boxes, to know which proposal shows which object).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glee_core.mask_ops import box_iou
from train.data.shapeworld.reasoning import reasoning_queries
from train.data.shapeworld.referring import referring_expressions
from train.data.shapeworld.scene import Scene

SEG = "[SEG]"
KINDS = ("reasoning", "referring", "pair", "caption")
CAPTION_IOU = 0.5  # a proposal shows an object when their boxes overlap at least this much


@dataclass
class SegChat:
    """One conversation: ``turns`` [(question, answer)], ``masks`` bool [H, W] per ``[SEG]`` in answer order."""

    kind: str
    turns: list[tuple[str, str]]
    masks: list[np.ndarray]
    meta: dict = field(default_factory=dict)


def seg_list(count: int) -> str:
    """``[SEG]``, ``[SEG] and [SEG]``, ``[SEG], [SEG] and [SEG]``."""
    if count < 1:
        raise ValueError(f"an answer needs at least one {SEG}, got {count}")
    items = [SEG] * count
    return items[0] if count == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _left_to_right(scene: Scene, targets: list[int]) -> list[int]:
    return sorted(targets, key=lambda i: float(scene.objects[i].box[0] + scene.objects[i].box[2]))


def reasoning_chats(scene: Scene, rng: np.random.Generator) -> list[SegChat]:
    chats = []
    for query in reasoning_queries(scene, rng):
        question = (f"{query.text} Please output segmentation mask." if query.is_sentence
                    else f"What is {query.text} in this image? Please output segmentation mask.")
        targets = _left_to_right(scene, query.targets)
        chats.append(SegChat("reasoning", [(question, f"Sure, {seg_list(len(targets))}.")],
                             [scene.objects[i].mask for i in targets],
                             {"family": query.family, "is_sentence": query.is_sentence, "targets": targets}))
    return chats


def referring_chats(scene: Scene, rng: np.random.Generator) -> list[SegChat]:
    expressions = referring_expressions(scene, rng, max_per_object=2)
    chats = [SegChat("referring", [(f"Please segment {e.text} in this image.", f"Sure, it is {SEG}.")],
                     [scene.objects[e.target].mask], {"targets": [e.target], "expression": e.text})
             for e in expressions]
    by_object: dict[int, str] = {}
    for e in expressions:
        by_object.setdefault(e.target, e.text)
    if len(by_object) >= 2:
        first, second = (int(i) for i in rng.choice(sorted(by_object), 2, replace=False))
        a, b = by_object[first], by_object[second]
        chats.append(SegChat("pair", [(f"Please segment {a} and {b}.", f"Sure, {a} {SEG} and {b} {SEG}.")],
                             [scene.objects[first].mask, scene.objects[second].mask],
                             {"targets": [first, second], "phrases": [a, b]}))
    return chats


def caption_chats(scene: Scene, proposal_boxes: np.ndarray) -> list[SegChat]:
    """Questions about the proposals that show exactly one object (box IoU >= CAPTION_IOU with one only)."""
    if not len(scene.objects) or not len(proposal_boxes):
        return []
    iou = box_iou(np.asarray(proposal_boxes, np.float32), np.stack([o.box for o in scene.objects]))
    chats = []
    for k, row in enumerate(iou):
        hits = np.flatnonzero(row >= CAPTION_IOU)
        if len(hits) != 1:
            continue
        obj = scene.objects[int(hits[0])]
        article = "An" if obj.color[0] in "aeiou" else "A"
        chats.append(SegChat("caption", [(f"What is <obj{k}>?", f"{article} {obj.color} {obj.shape}.")], [],
                             {"object": k, "target": int(hits[0]), "color": obj.color, "shape": obj.shape}))
    return chats


def scene_chats(scene: Scene, rng: np.random.Generator, proposal_boxes: np.ndarray | None = None) -> list[SegChat]:
    """Every conversation of every kind the scene affords (captions only with ``proposal_boxes`` [K, 4] xyxy)."""
    chats = reasoning_chats(scene, rng) + referring_chats(scene, rng)
    if proposal_boxes is not None:
        chats += caption_chats(scene, proposal_boxes)
    return chats
