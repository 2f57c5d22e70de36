"""The official GLEE video inference (``MinVIS_inference``) on a clip's per-frame outputs.

Steps, as the official code does them (see ``shared/reference/glee/README.md``, "Video"):

1. association: frame t ≥ 1 is matched to the mean of the last 3 matched embeddings (Hungarian on
   ``1 - cosine``, :func:`glee_core.tracking.associate`) and every per-frame output is reordered so that
   query slot q is one track;
2. scores: class logits averaged over frames, ``sigmoid``, flattened over (query, class), top-k (30) unsorted;
3. masks: per frame, bilinear to the padded size, crop to the resized image, bilinear to the original size, > 0;
4. boxes: cxcywh → xyxy scaled by the *original* size (padding ignored: an official quirk), not clamped.

There is no mask-score factor; a result's identity is its query slot after matching.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from glee_core import processing, tracking

VIDEO_TOPK = 30


@dataclass
class VideoInstances:
    """Official video results for one clip of T frames, R = top-k results, Q queries.

    Attributes:
        scores: [R] sigmoid of the frame-mean logit; labels: [R] int64; query_index: [R] int64 (track slot).
        masks: [R, T, H0, W0] bool at the original size.
        boxes: [R, T, 4] xyxy in original pixels (official scaling, unclamped, float).
        association: the frame-to-track matching; mean_logits: [Q, K]; all_boxes: [Q, T, 4] xyxy pixels.
    """

    scores: torch.Tensor
    labels: torch.Tensor
    query_index: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    association: tracking.TrackAssociation
    mean_logits: torch.Tensor
    all_boxes: torch.Tensor


def minvis_inference(logits: torch.Tensor, boxes: torch.Tensor, mask_logits: torch.Tensor, embeds: torch.Tensor,
                     padded_size: tuple[int, int], crop: tuple[int, int], original: tuple[int, int],
                     topk: int = VIDEO_TOPK) -> VideoInstances:
    """Official video post-processing.

    Args:
        logits: [T, Q, K]; boxes: [T, Q, 4] cxcywh in [0, 1]; mask_logits: [T, Q, h, w] (stride 4);
        embeds: [T, Q, C] track embeddings; padded_size (Hp, Wp); crop (h, w) of the resized frame inside
        the padding; original (H0, W0).
    """
    association = tracking.associate(embeds)
    mean_logits = tracking.reorder(logits, association.order).mean(1)  # [Q, K]
    tracked_boxes = tracking.reorder(boxes, association.order)  # [Q, T, 4]
    scale = tracked_boxes.new_tensor([original[1], original[0]] * 2)
    all_boxes = processing.box_cxcywh_to_xyxy(tracked_boxes) * scale
    num_classes = mean_logits.shape[1]
    scores, index = mean_logits.sigmoid().flatten().topk(min(topk, mean_logits.numel()), sorted=False)
    query, labels = torch.div(index, num_classes, rounding_mode="floor"), index % num_classes
    tracked_masks = tracking.reorder(mask_logits, association.order)[query]  # [R, T, h, w]
    masks = processing.upsample_masks(tracked_masks, padded_size, crop, original) > 0
    return VideoInstances(scores, labels, query, masks, all_boxes[query], association, mean_logits, all_boxes)
