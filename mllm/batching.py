"""Batches for the GLEE-LLM: padded token tensors, VLM vision inputs, GLEE images and mask targets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from glee_core import processing
from mllm.objects import ObjectTokens
from mllm.prompting import IGNORE_INDEX, EncodedConversation


@dataclass
class GleeLLMBatch:
    """B conversations, one image each.

    Attributes:
        input_ids, attention_mask, labels: [B, T] (right-padded; labels -100 where unsupervised).
        vision: the VLM processor's image inputs, concatenated along their first dimension.
        glee: the images as GLEE's normalised padded batch ([B, 3, Hp, Wp] + sizes).
        seg_targets: [N, Hp/4, Wp/4] float in [0, 1], one per ``[SEG]`` in reading order (row by row), or None.
        objects: precomputed object tokens (a frozen GLEE gives the same every time), or None to compute them.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    vision: dict[str, torch.Tensor]
    glee: processing.ImageBatch
    seg_targets: torch.Tensor | None = None
    objects: ObjectTokens | None = None
    meta: list[dict] = field(default_factory=list)


def mask_target(mask: np.ndarray, image_size: tuple[int, int], padded_size: tuple[int, int]) -> torch.Tensor:
    """A bool mask [H0, W0] -> its soft version [Hp/4, Wp/4] in the frame of GLEE's stride-4 mask logits."""
    t = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    t = F.interpolate(t, size=image_size, mode="bilinear", align_corners=False)
    t = F.pad(t, (0, padded_size[1] - image_size[1], 0, padded_size[0] - image_size[0]))
    return F.avg_pool2d(t, 4)[0, 0]


def collate(
    conversations: Sequence[EncodedConversation],
    images: Sequence[np.ndarray],
    spec: processing.InputSpec,
    pad_token_id: int,
    seg_masks: Sequence[Sequence[np.ndarray]] | None = None,
    objects: Sequence[ObjectTokens] | None = None,
    meta: Sequence[dict] | None = None,
) -> GleeLLMBatch:
    """Pad and stack B encoded conversations with their HWC uint8 images and, per conversation, its ``[SEG]``
    ground-truth masks (bool [H0, W0], in answer order)."""
    if len(conversations) != len(images):
        raise ValueError(f"{len(conversations)} conversations for {len(images)} images")
    length = max(len(c.input_ids) for c in conversations)
    ids = torch.full((len(conversations), length), pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    attention = torch.zeros_like(ids)
    for row, conv in enumerate(conversations):
        n = len(conv.input_ids)
        ids[row, :n], labels[row, :n], attention[row, :n] = conv.input_ids, conv.labels, 1
    keys = set(conversations[0].vision)
    if any(set(c.vision) != keys for c in conversations):
        raise ValueError("conversations carry different vision inputs; build them with one processor")
    vision = {k: torch.cat([c.vision[k] for c in conversations]) for k in keys}
    glee = processing.preprocess(list(images), spec)
    targets = None
    if seg_masks is not None:
        if len(seg_masks) != len(conversations):
            raise ValueError(f"{len(seg_masks)} mask lists for {len(conversations)} conversations")
        rows = [mask_target(m, glee.image_sizes[i], glee.padded_size) for i, masks in enumerate(seg_masks) for m in masks]
        h, w = glee.padded_size
        targets = torch.stack(rows) if rows else torch.zeros(0, h // 4, w // 4)
    return GleeLLMBatch(ids, attention, labels, vision, glee, targets,
                        ObjectTokens.cat(list(objects)) if objects else None, list(meta or []))
