"""GLEE's training losses (as the official ``models/criterion.py`` with the official ``GLEE.py`` weights).

For every prediction step of the decoder (the final one: no suffix; the initial prediction and the first
L - 1 layers: ``_{i}``; the two-stage proposals: ``_interm``) the queries are Hungarian-matched to the
targets and supervised with

* ``loss_ce``: sigmoid focal loss over all queries x prompts, positives = (matched query, target label),
  divided by ``num_boxes`` (official ``loss.mean(1).sum() / num_boxes * Q``, the same number);
* ``loss_bbox`` / ``loss_giou``: L1 and 1 - GIoU of the matched boxes (predictions clamped to [0, 1]) / num_boxes;
* ``loss_mask`` / ``loss_dice``: sigmoid CE and dice of the matched masks on ``num_points`` PointRend points
  (importance-sampled from the predicted logits) / num_boxes;
* ``loss_conf``: with a visual prompt, sigmoid focal loss of the confidence logit (matched = 1), summed over
  images and averaged over queries (official: ``focal.mean(1).sum() / num_boxes * num_boxes``); it is 0 for
  the ``_interm`` step (the official two-stage outputs carry no visual-prompt flag) and without a visual prompt.

``num_boxes`` is the number of targets in the batch (averaged over processes by ``num_boxes_reducer``),
at least 1. Denoising (DN) queries are matched by construction (group g, slot t <-> target t) and get
``loss_ce``, ``loss_bbox``, ``loss_giou`` (and the mask losses unless ``dn_masks`` is False, the official
``DN: "standard"``) per step with suffixes ``_dn`` / ``_dn_{i}``, divided by ``num_boxes * num_groups``.
Every returned loss is already multiplied by its :class:`LossWeights` entry; ``"loss"`` is their sum.
Zero-valued terms (``0 * prediction.sum()``) keep every loss connected to the graph when nothing is matched.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from glee_core.modeling.decoder import DecoderOutput, DenoisingOutput, DenoisingQueries

from .box_ops import box_cxcywh_to_xyxy, elementwise_generalized_box_iou
from .matcher import HungarianMatcher, Target
from .point_sampling import point_sample, uncertain_point_coords

Indices = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LossWeights:
    """Multipliers of the loss terms (official ``CLASS/BOX/GIOU/MASK/DICE_WEIGHT``; conf uses CLASS_WEIGHT)."""

    cls: float = 4.0
    bbox: float = 5.0
    giou: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    conf: float = 4.0

    def of(self, key: str) -> float:
        """The weight of a loss key such as ``loss_giou_dn_3``."""
        base = {"loss_ce": self.cls, "loss_bbox": self.bbox, "loss_giou": self.giou, "loss_mask": self.mask,
                "loss_dice": self.dice, "loss_conf": self.conf}
        return base["_".join(key.split("_")[:2])]


@dataclass
class StepPrediction:
    """One prediction step: logits [B, Q, K], boxes [B, Q, 4] cxcywh, scores [B, Q, 1], masks [B, Q, h, w]."""

    logits: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor | None


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise RetinaNet focal loss of logits against 0/1 targets (same shape); alpha < 0 disables it."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def matching_steps(output: DecoderOutput) -> list[tuple[str, StepPrediction]]:
    """(key suffix, predictions) of every matched step: final "", then "_0" .. "_{L-1}", then "_interm"."""
    steps = _layer_steps(output.layer_logits, output.layer_boxes, output.layer_scores, output.layer_masks, "")
    interm = StepPrediction(output.interm_logits, output.interm_boxes, output.interm_scores, output.interm_masks)
    return steps + [("_interm", interm)]


def denoising_steps(output: DenoisingOutput) -> list[tuple[str, StepPrediction]]:
    """(key suffix, predictions) of every DN step: final "_dn", then "_dn_0" .. "_dn_{L-1}"."""
    return _layer_steps(output.layer_logits, output.layer_boxes, output.layer_scores, output.layer_masks, "_dn")


def _layer_steps(logits: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
                 masks: Sequence[torch.Tensor | None], prefix: str) -> list[tuple[str, StepPrediction]]:
    last = logits.shape[0] - 1
    if not (boxes.shape[0] == scores.shape[0] == len(masks) == last + 1):
        raise ValueError(f"prediction steps disagree: logits {logits.shape[0]}, boxes {boxes.shape[0]}, "
                         f"scores {scores.shape[0]}, masks {len(masks)}")
    order = [last, *range(last)]
    return [(prefix if s == last else f"{prefix}_{s}", StepPrediction(logits[s], boxes[s], scores[s], masks[s]))
            for s in order]


def denoising_indices(denoising: DenoisingQueries, targets: Sequence[Target]) -> Indices:
    """Per image (DN query index, target index): slot ``g * single_pad + t`` of group g holds target t.

    ValueError when the DN queries were not built from these targets (count or labels disagree).
    """
    slots = denoising.query_index % denoising.single_pad
    indices = []
    for b, target in enumerate(targets):
        chosen = denoising.batch_index == b
        src, tgt = denoising.query_index[chosen].cpu(), slots[chosen].cpu()
        if tgt.numel() != len(target) * denoising.num_groups or (
                len(target) and not torch.equal(denoising.known_labels[chosen].cpu(), target.labels.cpu()[tgt])):
            raise ValueError(f"denoising queries do not match the targets of image {b} "
                             f"({len(target)} targets, {tgt.numel()} DN slots in {denoising.num_groups} groups)")
        indices.append((src, tgt))
    return indices


class SetCriterion:
    """The GLEE set loss; see the module docstring.

    ``num_boxes_reducer``: maps this process's target count (float tensor [1]) to the mean over processes
    (official: ``all_reduce`` then ``/ world_size``); None = single process.
    ``dn_masks``: give DN queries the mask losses too (official ``DN: "seg"``; False = ``"standard"``).
    """

    def __init__(self, matcher: HungarianMatcher, weights: LossWeights = LossWeights(), num_points: int = 12544,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, dn_masks: bool = True,
                 num_boxes_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.matcher = matcher
        self.weights = weights
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.dn_masks = dn_masks
        self.num_boxes_reducer = num_boxes_reducer

    def __call__(self, output: DecoderOutput, targets: Sequence[Target], *,
                 denoising: DenoisingQueries | None = None, visual_prompt: bool = False,
                 generator: torch.Generator | None = None, matched: list | None = None) -> dict[str, torch.Tensor]:
        """Weighted losses of a training-mode decoder output; ``denoising`` = the queries given to the decoder.
        ``matched``: a list that receives the final step's (query_index, target_index) pairs, one per image."""
        if len(targets) != output.pred_logits.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {output.pred_logits.shape[0]}")
        num_boxes = self.num_boxes(targets, output.pred_logits.device)
        losses: dict[str, torch.Tensor] = {}
        for suffix, pred in matching_steps(output):
            indices = self.matcher(pred.logits, pred.boxes, pred.masks, targets, generator=generator)
            if matched is not None and suffix == "":
                matched.extend(indices)
            step = self.step_losses(pred, targets, indices, num_boxes, with_masks=True, generator=generator)
            step["loss_conf"] = self.loss_conf(pred, indices, enabled=visual_prompt and suffix != "_interm")
            losses.update({key + suffix: value for key, value in step.items()})
        if denoising is not None:
            if output.denoising is None:
                raise ValueError("denoising queries given but the decoder output has no DN predictions")
            if output.denoising.layer_logits.shape[2] != denoising.pad_size:
                raise ValueError(f"DN predictions have {output.denoising.layer_logits.shape[2]} queries, "
                                 f"the DN queries {denoising.pad_size}")
            indices = denoising_indices(denoising, targets)
            for suffix, pred in denoising_steps(output.denoising):
                step = self.step_losses(pred, targets, indices, num_boxes * denoising.num_groups,
                                        with_masks=self.dn_masks, generator=generator)
                losses.update({key + suffix: value for key, value in step.items()})
        weighted = {key: value * self.weights.of(key) for key, value in losses.items()}
        weighted["loss"] = torch.stack(list(weighted.values())).sum()
        return weighted

    def num_boxes(self, targets: Sequence[Target], device: torch.device) -> float:
        """Targets in the batch (mean over processes), at least 1."""
        count = torch.tensor([float(sum(len(t) for t in targets))], device=device)
        if self.num_boxes_reducer is not None:
            count = self.num_boxes_reducer(count)
        return max(float(count.item()), 1.0)

    def step_losses(self, pred: StepPrediction, targets: Sequence[Target], indices: Indices, num_boxes: float, *,
                    with_masks: bool, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Unweighted ``loss_ce``, ``loss_bbox``, ``loss_giou`` (and ``loss_mask``, ``loss_dice``) of one step."""
        losses = {"loss_ce": self.loss_labels(pred, targets, indices, num_boxes),
                  **self.loss_boxes(pred, targets, indices, num_boxes)}
        if with_masks:
            losses.update(self.loss_masks(pred, targets, indices, num_boxes, generator))
        return losses

    def loss_labels(self, pred: StepPrediction, targets: Sequence[Target], indices: Indices,
                    num_boxes: float) -> torch.Tensor:
        """Focal loss over all queries and prompts, positives at (matched query, its target's label)."""
        logits = pred.logits.float()
        batch_idx, src_idx = _source_index(indices, logits.device)
        labels = torch.cat([t.labels.to(logits.device)[j.to(logits.device)] for t, (_, j) in zip(targets, indices)])
        onehot = torch.zeros_like(logits)
        onehot[batch_idx, src_idx, labels] = 1.0
        return sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma).sum() / num_boxes

    def loss_conf(self, pred: StepPrediction, indices: Indices, enabled: bool) -> torch.Tensor:
        """Visual-prompt confidence: focal loss of scores [B, Q, 1] with matched queries = 1; else 0."""
        scores = pred.scores.float()
        if not enabled:
            return scores.sum() * 0
        target = torch.zeros_like(scores)
        target[_source_index(indices, scores.device)] = 1.0
        return sigmoid_focal_loss(scores, target, self.focal_alpha, self.focal_gamma).mean(1).sum()

    def loss_boxes(self, pred: StepPrediction, targets: Sequence[Target], indices: Indices,
                   num_boxes: float) -> dict[str, torch.Tensor]:
        """L1 and 1 - GIoU of matched boxes (cxcywh, predictions clamped to [0, 1])."""
        boxes = pred.boxes.float()
        src_idx = _source_index(indices, boxes.device)
        if src_idx[0].numel() == 0:
            zero = boxes.sum() * 0
            return {"loss_bbox": zero, "loss_giou": zero.clone()}
        src = boxes[src_idx].clamp(0, 1)
        tgt = torch.cat([t.boxes.to(src)[j.to(src.device)] for t, (_, j) in zip(targets, indices)])
        giou = elementwise_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))
        return {"loss_bbox": F.l1_loss(src, tgt, reduction="sum") / num_boxes,
                "loss_giou": (1 - giou).sum() / num_boxes}

    def loss_masks(self, pred: StepPrediction, targets: Sequence[Target], indices: Indices, num_boxes: float,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Sigmoid CE and dice of matched masks on PointRend points (targets without masks are skipped)."""
        with_masks = [(b, i, j) for b, (t, (i, j)) in enumerate(zip(targets, indices)) if t.masks is not None and
                      i.numel()]
        if pred.masks is None:
            if with_masks:
                raise ValueError("targets have masks but the predictions have none (run the decoder in training "
                                 "mode)")
            zero = pred.logits.sum() * 0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        if not with_masks:
            zero = pred.masks.sum() * 0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        device = pred.masks.device
        src = torch.cat([pred.masks[b][i.to(device)] for b, i, _ in with_masks]).float()[:, None]
        coords = uncertain_point_coords(src.detach(), self.num_points, self.oversample_ratio,
                                        self.importance_sample_ratio, generator=generator)
        counts = [i.numel() for _, i, _ in with_masks]
        with torch.no_grad():
            labels = torch.cat([
                point_sample(targets[b].masks.to(device=device, dtype=torch.float32)[j.to(device)][:, None], c)
                for (b, _, j), c in zip(with_masks, coords.split(counts))
            ])[:, 0]
        logits = point_sample(src, coords)[:, 0]
        ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
        probs = logits.sigmoid()
        dice = 1 - (2 * (probs * labels).sum(-1) + 1) / (probs.sum(-1) + labels.sum(-1) + 1)
        return {"loss_mask": ce.sum() / num_boxes, "loss_dice": dice.sum() / num_boxes}


def _source_index(indices: Indices, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, query index) of every matched pair, concatenated over the batch."""
    batch = torch.cat([torch.full_like(i, b) for b, (i, _) in enumerate(indices)]).to(device)
    return batch, torch.cat([i for i, _ in indices]).to(device)
