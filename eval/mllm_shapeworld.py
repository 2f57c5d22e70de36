"""The GLEE-LLM learning proof, measured on held-out shapeworld scenes by generation (no teacher forcing).

* reasoning gIoU / cIoU — single-target reasoning queries; the first ``[SEG]``'s mask is the prediction (no
  ``[SEG]``: an empty mask).
* two-mask ``[SEG]`` count — share of two-target questions (reasoning or pairs) answered with exactly 2.
* region captioning — "What is <objK>?" for proposals showing one object: both colour and shape named.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rich.table import Table
from tqdm import tqdm

from eval.segmentation_metrics import SegmentationScores
from mllm.modeling import GleeLLM
from train.data.shapeworld import COLORS, SHAPES, generate_scene, scene_seed
from train.data.shapeworld.chat import caption_chats, reasoning_chats, referring_chats

TEST_SEED = 2026  # the held-out scenes of every shapeworld evaluation


@dataclass
class MllmScores:
    reasoning: SegmentationScores = field(default_factory=SegmentationScores)
    referring: SegmentationScores = field(default_factory=SegmentationScores)
    two_mask_total: int = 0
    two_mask_exact: int = 0
    caption_total: int = 0
    caption_correct: int = 0
    examples: list[dict] = field(default_factory=list)

    @property
    def two_mask_accuracy(self) -> float:
        return self.two_mask_exact / self.two_mask_total if self.two_mask_total else float("nan")

    @property
    def caption_accuracy(self) -> float:
        return self.caption_correct / self.caption_total if self.caption_total else float("nan")

    def as_dict(self) -> dict:
        return {"reasoning_giou": self.reasoning.giou, "reasoning_ciou": self.reasoning.ciou,
                "reasoning_queries": len(self.reasoning), "referring_giou": self.referring.giou,
                "referring_ciou": self.referring.ciou, "referring_queries": len(self.referring),
                "two_mask_exact_count": self.two_mask_accuracy, "two_mask_questions": self.two_mask_total,
                "caption_accuracy": self.caption_accuracy, "caption_questions": self.caption_total}

    def table(self) -> Table:
        table = Table(title="GLEE-LLM on held-out shapeworld (generated answers)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("n", justify="right")
        rows = [("reasoning gIoU", self.reasoning.giou, len(self.reasoning)),
                ("reasoning cIoU", self.reasoning.ciou, len(self.reasoning)),
                ("referring gIoU", self.referring.giou, len(self.referring)),
                ("referring cIoU", self.referring.ciou, len(self.referring)),
                ("two-mask answers with exactly 2 [SEG]", self.two_mask_accuracy, self.two_mask_total),
                ("region caption (colour + shape)", self.caption_accuracy, self.caption_total)]
        for name, value, n in rows:
            table.add_row(name, f"{value:.3f}", str(n))
        return table


def _names(text: str, vocabulary) -> set[str]:
    words = set(text.lower().replace(".", " ").replace(",", " ").split())
    return {name for name in vocabulary if name in words}


def evaluate_mllm_shapeworld(model: GleeLLM, *, num_scenes: int = 50, seed: int = TEST_SEED, per_kind: int = 2,
                             mask_source: str | None = None, progress: bool = True) -> MllmScores:
    """Up to ``per_kind`` questions of each kind per held-out test scene, answered by ``model.generate`` (masks from
    ``mask_source``, default the model's)."""
    scores = MllmScores()
    rng = np.random.default_rng(seed)
    for index in tqdm(range(num_scenes), desc="mLLM eval", disable=not progress):
        scene = generate_scene(scene_seed("test", index, seed), split="test")
        chats = reasoning_chats(scene, rng) + referring_chats(scene, rng)
        single = [c for c in chats if len(c.masks) == 1]
        double = [c for c in chats if len(c.masks) == 2]
        picks = [single[i] for i in rng.permutation(len(single))[: 2 * per_kind]]
        picks += [double[i] for i in rng.permutation(len(double))[:per_kind]]
        for chat in picks:
            question = chat.turns[0][0]
            answer = model.generate(scene.image, question, mask_source=mask_source)
            if len(chat.masks) == 2:
                scores.two_mask_total += 1
                scores.two_mask_exact += len(answer.segments) == 2
                continue
            masks = answer.masks
            prediction = masks[0].masks[0] if masks else np.zeros(scene.image.shape[:2], bool)
            metric = scores.reasoning if chat.kind == "reasoning" else scores.referring
            iou = metric.add(prediction, chat.masks[0])
            if len(scores.examples) < 12:
                scores.examples.append({"scene": index, "question": question, "answer": answer.text, "iou": iou})
        if model.object_projector is None:
            continue
        captions = caption_chats(scene, model.object_tokens(scene.image).pixel_boxes(*scene.image.shape[:2]))
        for chat in [captions[i] for i in rng.permutation(len(captions))[:per_kind]]:
            answer = model.generate(scene.image, chat.turns[0][0])
            scores.caption_total += 1
            scores.caption_correct += (_names(answer.text, COLORS) == {chat.meta["color"]}
                                       and _names(answer.text, SHAPES) == {chat.meta["shape"]})
    return scores
