"""Object proposals: GLEE's top-K queries of an image, the content of the LLM's object tokens."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from glee_core.modeling.glee import GleeModel
from glee_core.mask_ops import box_iou
from glee_core.processing import box_cxcywh_to_xyxy

DUPLICATE_IOU = 0.6  # box IoU above which a lower-scoring query counts as the same object


@dataclass
class ObjectTokens:
    """The K best GLEE queries of B images, best first.

    Attributes:
        queries: [B, K, C] query embeddings (GLEE's ``query_embeds``).
        boxes: [B, K, 4] cxcywh in [0, 1] of the image region (padding excluded).
        scores: [B, K] best class probability of each query.
        mask_logits: [B, K, Hp/4, Wp/4] mask logits at stride 4 of the padded GLEE input.
        regions: [B, K, mask_dim + 3 (+ S²) (+ N)] what lies under each mask: GLEE's per-pixel mask features and
            the normalised RGB of the input, averaged with the mask probabilities as weights (region pooling), then,
            when asked for, the mask's S x S silhouette inside its box and the query's probability for each of the
            N prompt categories.
    """

    queries: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    mask_logits: torch.Tensor
    regions: torch.Tensor

    FIELDS = ("queries", "boxes", "scores", "mask_logits", "regions")

    def __getitem__(self, index) -> "ObjectTokens":
        return ObjectTokens(*(getattr(self, name)[index] for name in self.FIELDS))

    @staticmethod
    def cat(parts: list["ObjectTokens"]) -> "ObjectTokens":
        return ObjectTokens(*(torch.cat([getattr(p, name) for p in parts]) for name in ObjectTokens.FIELDS))

    def pixel_boxes(self, height: int, width: int) -> np.ndarray:
        """xyxy pixel boxes [K, 4] of the first image's objects, for an image of ``height`` x ``width``, clipped
        to it (as :meth:`mllm.GleeLLM.objects` reports them)."""
        scale = self.boxes.new_tensor([width, height, width, height])
        xyxy = box_cxcywh_to_xyxy(self.boxes[0].float()) * scale
        return torch.minimum(xyxy.clamp(min=0), scale).cpu().numpy()


def region_features(mask_logits: torch.Tensor, mask_features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mask-weighted means of ``mask_features`` [B, C, h, w] and of ``images`` [B, 3, Hp, Wp] (pooled to h x w)
    under mask logits [B, K, h, w] -> [B, K, C + 3]."""
    colour = nn.functional.adaptive_avg_pool2d(images, mask_features.shape[-2:])
    pixels = torch.cat([mask_features, colour.to(mask_features.dtype)], dim=1).flatten(2)  # [B, C+3, hw]
    weights = mask_logits.sigmoid().flatten(2)  # [B, K, hw]
    return torch.einsum("bkp,bcp->bkc", weights, pixels) / weights.sum(-1, keepdim=True).clamp(min=1e-6)


def mask_silhouettes(mask_logits: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each mask's shape inside its own box: mask probabilities [B, K, h, w] sampled on a ``size`` x ``size`` grid
    spanning the box (cxcywh [B, K, 4] in [0, 1] of the same frame; bilinear, like RoIAlign) -> [B, K, size²].
    Position- and scale-free, so it tells a star from a pentagon where GLEE's query may not."""
    b, k = mask_logits.shape[:2]
    steps = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size - 0.5  # cell centres
    cx, cy, w, h = boxes.detach().unbind(-1)
    xs = cx[..., None] + w[..., None] * steps  # [B, K, S] in [0, 1]
    ys = cy[..., None] + h[..., None] * steps
    grid = torch.stack(torch.broadcast_tensors(xs[..., None, :], ys[..., :, None]), dim=-1) * 2 - 1  # [B, K, S, S, 2]
    probs = mask_logits.sigmoid().reshape(b * k, 1, *mask_logits.shape[-2:])
    sampled = nn.functional.grid_sample(probs, grid.reshape(b * k, size, size, 2).to(probs.dtype),
                                        align_corners=False)
    return sampled.reshape(b, k, size * size)


def to_image_frame(boxes: torch.Tensor, padded_size: tuple[int, int], image_sizes: list[tuple[int, int]]) -> torch.Tensor:
    """cxcywh boxes [B, K, 4] in [0, 1] of the padded input -> in [0, 1] of each image's region."""
    hp, wp = padded_size
    scale = boxes.new_tensor([[wp / w, hp / h, wp / w, hp / h] for h, w in image_sizes])
    return boxes * scale[:, None, :]


def distinct_topk(scores: torch.Tensor, boxes: torch.Tensor, k: int, iou: float = DUPLICATE_IOU
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` queries by score [B, Q] that are not duplicates: a query whose box (cxcywh [B, Q, 4]) overlaps a
    better one by more than ``iou`` is passed over (GLEE often finds one object with several queries); when fewer
    than ``k`` remain, the best passed-over ones fill up. Returns (scores, index), each [B, k], best first."""
    order = scores.argsort(dim=1, descending=True)
    xyxy = box_cxcywh_to_xyxy(boxes.detach().float()).clamp(0, 1).cpu().numpy()
    picked = []
    for b in range(scores.shape[0]):
        overlap = box_iou(xyxy[b], xyxy[b])
        kept: list[int] = []
        for q in order[b].tolist():
            if kept and float(overlap[q, kept].max()) > iou:
                continue
            kept.append(q)
            if len(kept) == k:
                break
        rest = [q for q in order[b].tolist() if q not in kept]
        picked.append(kept + rest[: k - len(kept)])
    index = torch.tensor(picked, device=scores.device)
    return scores.gather(1, index), index


def propose_objects(glee: GleeModel, images: torch.Tensor, image_sizes: list[tuple[int, int]], categories: list[str],
                    k: int, image_features: dict[str, torch.Tensor] | None = None, silhouette_size: int = 0,
                    class_scores: bool = False) -> ObjectTokens:
    """GLEE on normalised padded images [B, 3, Hp, Wp] with a category prompt; the top-``k`` distinct queries.
    Their ``regions`` end with the ``silhouette_size``² mask silhouette when it is > 0, then, with
    ``class_scores``, each query's probability for every category [len(categories)]."""
    num_queries = glee.predictor.num_queries
    if not 0 < k <= num_queries:
        raise ValueError(f"num_objects must be in 1..{num_queries} (GLEE's query count), got {k}")
    out = glee(images, categories=categories, image_features=image_features)
    probs = out.pred_logits.sigmoid()  # [B, Q, len(categories)]
    scores, index = distinct_topk(probs.amax(-1), out.pred_boxes, k)
    gather = lambda t: t.gather(1, index.view(*index.shape, *[1] * (t.dim() - 2)).expand(-1, -1, *t.shape[2:]))
    padded_boxes = gather(out.pred_boxes)
    boxes = to_image_frame(padded_boxes, (images.shape[-2], images.shape[-1]), image_sizes)
    masks = gather(out.pred_masks)
    regions = region_features(masks, out.mask_features, images)
    if silhouette_size:
        regions = torch.cat([regions, mask_silhouettes(masks, padded_boxes, silhouette_size)], dim=-1)
    if class_scores:
        regions = torch.cat([regions, gather(probs).to(regions.dtype)], dim=-1)
    return ObjectTokens(gather(out.query_embeds), boxes.clamp(0, 1), scores, masks, regions)
