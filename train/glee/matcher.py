"""Hungarian matching of decoder queries to ground-truth objects (as the official ``models/matcher.py``).

Per image the cost of query q for target t is
``cost_class * focal(q, label_t) + cost_box * L1(box_q, box_t) - cost_giou * GIoU(box_q, box_t)
+ cost_mask * CE(mask_q, mask_t) + cost_dice * dice(mask_q, mask_t)``; the focal class cost is the
positive minus the negative focal term of the target's label, predicted boxes are clamped to [0, 1], and
the mask costs are evaluated on one set of uniformly random points shared by all predictions and targets
of the image. ``scipy.optimize.linear_sum_assignment`` then picks min(Q, n) pairs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

from .box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from .point_sampling import point_sample, uniform_points

MATCH_COSTS = ("box", "mask")

# Added inside the focal-cost logarithms, as the official matcher.
_LOG_EPS = 1e-6


@dataclass
class Target:
    """Ground truth of one image.

    ``labels`` int64 [n]: index into the K prompts (0 for referring / visual prompts, K = 1).
    ``boxes`` float [n, 4]: cxcywh normalised by the padded input size.
    ``masks`` float/bool [n, Hm, Wm] or None: covering the padded input (any resolution; points are sampled in
    normalised coordinates).
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.labels.shape[0] if self.labels.dim() == 1 else -1
        if n < 0 or self.labels.is_floating_point():
            raise ValueError(f"Target.labels must be an integer tensor [n]; got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")
        if self.boxes.shape != (n, 4):
            raise ValueError(f"Target.boxes must be [{n}, 4] (cxcywh); got {tuple(self.boxes.shape)}")
        if self.masks is not None and (self.masks.dim() != 3 or self.masks.shape[0] != n):
            raise ValueError(f"Target.masks must be [{n}, H, W] or None; got {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return self.labels.shape[0]


def batch_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary CE of every prediction against every target: logits [N, P], targets [M, P] -> [N, M]."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss (+1 smoothing) of every prediction against every target: [N, P], [M, P] -> [N, M]."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal classification cost: logits [Q, K], labels [n] -> [Q, n] (positive minus negative focal term)."""
    prob = logits.sigmoid()
    neg = (1 - alpha) * prob ** gamma * -(1 - prob + _LOG_EPS).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + _LOG_EPS).log()
    return pos[:, labels] - neg[:, labels]


def _total_cost(costs: dict[str, torch.Tensor], image: int) -> torch.Tensor:
    """Sum of the weighted costs; ValueError naming the first non-finite one."""
    total = sum(costs.values())
    if not torch.isfinite(total).all():
        bad = next((name for name, cost in costs.items() if not torch.isfinite(cost).all()), "total")
        raise ValueError(f"HungarianMatcher: the {bad} cost of image {image} has NaN/inf entries "
                         f"(non-finite predictions or targets)")
    return total


class HungarianMatcher:
    """One-to-one assignment of queries to targets; see the module docstring for the cost.

    ``match_on``: which of "box" and "mask" enter the cost besides the class (official: both, or box only for
    datasets without masks). Mask costs are also skipped when ``pred_masks`` is None or a target has no masks.
    """

    def __init__(self, cost_class: float = 4.0, cost_box: float = 5.0, cost_giou: float = 2.0,
                 cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, match_on: Sequence[str] = MATCH_COSTS):
        unknown = set(match_on) - set(MATCH_COSTS)
        if unknown:
            raise ValueError(f"match_on: unknown costs {sorted(unknown)}; expected a subset of {MATCH_COSTS}")
        self.cost_class = cost_class
        self.cost_box = cost_box
        self.cost_giou = cost_giou
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.match_on = tuple(match_on)

    @torch.no_grad()
    def __call__(self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor, pred_masks: torch.Tensor | None,
                 targets: Sequence[Target], *, generator: torch.Generator | None = None
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """pred_logits [B, Q, K], pred_boxes [B, Q, 4] (cxcywh in [0, 1]), pred_masks [B, Q, h, w] logits or None.

        Returns per image (query_index, target_index), int64 on the CPU, of length min(Q, n); empty for n = 0.
        ``generator`` draws the mask points (best on the masks' device; see ``uniform_points``).
        """
        batch, num_queries, num_classes = pred_logits.shape
        if pred_boxes.shape != (batch, num_queries, 4):
            raise ValueError(f"pred_boxes must be [{batch}, {num_queries}, 4]; got {tuple(pred_boxes.shape)}")
        if pred_masks is not None and pred_masks.shape[:2] != (batch, num_queries):
            raise ValueError(f"pred_masks must be [{batch}, {num_queries}, h, w]; got {tuple(pred_masks.shape)}")
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch}")
        return [self._match_image(b, pred_logits[b], pred_boxes[b], None if pred_masks is None else pred_masks[b],
                                  target, num_classes, generator) for b, target in enumerate(targets)]

    def _match_image(self, image: int, logits: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor | None,
                     target: Target, num_classes: int, generator: torch.Generator | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(target) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty.clone()
        labels = target.labels.to(logits.device)
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"image {image}: target labels must lie in [0, {num_classes}); got "
                             f"{labels.tolist()}")
        costs = {"class": self.cost_class * focal_class_cost(logits.float(), labels, self.focal_alpha,
                                                             self.focal_gamma)}
        if "box" in self.match_on:
            pred = boxes.float().clamp(0, 1)
            tgt = target.boxes.to(pred)
            costs["box L1"] = self.cost_box * torch.cdist(pred, tgt, p=1)
            costs["GIoU"] = -self.cost_giou * generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(tgt))
        if "mask" in self.match_on and masks is not None and target.masks is not None:
            coords = uniform_points(1, self.num_points, masks.device, generator=generator)
            pred_points = point_sample(masks[:, None].float(), coords.expand(masks.shape[0], -1, -1))[:, 0]
            tgt_masks = target.masks.to(device=masks.device, dtype=torch.float32)[:, None]
            tgt_points = point_sample(tgt_masks, coords.expand(len(target), -1, -1))[:, 0]
            costs["mask CE"] = self.cost_mask * batch_sigmoid_ce_cost(pred_points, tgt_points)
            costs["mask dice"] = self.cost_dice * batch_dice_cost(pred_points, tgt_points)
        rows, cols = linear_sum_assignment(_total_cost(costs, image).cpu().numpy())
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
