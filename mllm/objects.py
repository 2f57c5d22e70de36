"""Object proposals: GLEE's top-K queries of an image, the content of the LLM's object tokens."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from glee_core.modeling.glee import GleeModel


@dataclass
class ObjectTokens:
    """The K best GLEE queries of B images, best first.

    Attributes:
        queries: [B, K, C] query embeddings (GLEE's ``query_embeds``).
        boxes: [B, K, 4] cxcywh in [0, 1] of the image region (padding excluded).
        scores: [B, K] best class probability of each query.
        mask_logits: [B, K, Hp/4, Wp/4] mask logits at stride 4 of the padded GLEE input.
    """

    queries: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    mask_logits: torch.Tensor

    def __getitem__(self, index) -> "ObjectTokens":
        return ObjectTokens(self.queries[index], self.boxes[index], self.scores[index], self.mask_logits[index])

    @staticmethod
    def cat(parts: list["ObjectTokens"]) -> "ObjectTokens":
        return ObjectTokens(*(torch.cat([getattr(p, name) for p in parts]) for name in
                              ("queries", "boxes", "scores", "mask_logits")))


def to_image_frame(boxes: torch.Tensor, padded_size: tuple[int, int], image_sizes: list[tuple[int, int]]) -> torch.Tensor:
    """cxcywh boxes [B, K, 4] in [0, 1] of the padded input -> in [0, 1] of each image's region."""
    hp, wp = padded_size
    scale = boxes.new_tensor([[wp / w, hp / h, wp / w, hp / h] for h, w in image_sizes])
    return boxes * scale[:, None, :]


def propose_objects(glee: GleeModel, images: torch.Tensor, image_sizes: list[tuple[int, int]], categories: list[str],
                    k: int, image_features: dict[str, torch.Tensor] | None = None) -> ObjectTokens:
    """GLEE on normalised padded images [B, 3, Hp, Wp] with a category prompt; the top-``k`` queries."""
    num_queries = glee.predictor.num_queries
    if not 0 < k <= num_queries:
        raise ValueError(f"num_objects must be in 1..{num_queries} (GLEE's query count), got {k}")
    out = glee(images, categories=categories, image_features=image_features)
    scores, index = out.pred_logits.sigmoid().amax(-1).topk(k, dim=1)
    gather = lambda t: t.gather(1, index.view(*index.shape, *[1] * (t.dim() - 2)).expand(-1, -1, *t.shape[2:]))
    boxes = to_image_frame(gather(out.pred_boxes), (images.shape[-2], images.shape[-1]), image_sizes)
    return ObjectTokens(gather(out.query_embeds), boxes.clamp(0, 1), scores, gather(out.pred_masks))
