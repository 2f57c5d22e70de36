"""Losses of the GLEE-LLM: LISA's token CE and mask BCE + Dice, and GLEE-side query selection.

GLEE answers one ``[SEG]`` prompt with Q candidate queries. Training matches the ground-truth mask to the
candidate whose mask costs least (BCE + Dice, the single-target case of GLEE's Hungarian matching), puts
LISA's mask losses on that candidate, and a cross-entropy over the Q selection logits on its index, so
that the argmax used at inference picks it.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from mllm.prompting import IGNORE_INDEX

DICE_SCALE = 1000.0  # LISA's s: rescales only the epsilon
DICE_EPS = 1e-6


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token CE over supervised positions: logits [B, T, V], labels [B, T] (-100 = ignored) -> scalar."""
    shifted = logits[:, :-1].float()
    targets = labels[:, 1:]
    if not bool((targets != IGNORE_INDEX).any()):
        return shifted.sum() * 0.0
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def mask_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel BCE of mask logits [..., H, W] against a target in [0, 1] broadcastable to them -> [...]."""
    target = target.to(logits.dtype).expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(-2).mean(-1)


def mask_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LISA's Dice loss ``1 - (2 Σσ(p)t/s + ε) / (Σσ(p)/s + Σt/s + ε)`` per mask: [..., H, W] -> [...]."""
    prob = logits.sigmoid().flatten(-2)
    target = target.to(prob.dtype).expand_as(logits).flatten(-2)
    numerator = 2 * (prob * target).sum(-1) / DICE_SCALE + DICE_EPS
    denominator = prob.sum(-1) / DICE_SCALE + target.sum(-1) / DICE_SCALE + DICE_EPS
    return 1 - numerator / denominator


def match_candidates(candidate_masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Index [N] of the cheapest candidate per prompt: masks [N, Q, h, w] logits, targets [N, h, w] in [0, 1]."""
    with torch.no_grad():
        cost = mask_bce(candidate_masks, targets[:, None]) + mask_dice(candidate_masks, targets[:, None])
    return cost.argmin(dim=1)


POINTER_MIN_IOU = 0.5  # a [SEG] whose target no object token shows this well gets no pointer loss


def pointer_targets(object_masks: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The object token whose mask (logits [N, K, h, w]) best overlaps each target [N, h, w] in [0, 1], as index [N],
    and whether it does so with IoU >= POINTER_MIN_IOU (bool [N])."""
    with torch.no_grad():
        shown = object_masks > 0
        wanted = (targets >= 0.5)[:, None]
        iou = (shown & wanted).flatten(2).sum(-1) / (shown | wanted).flatten(2).sum(-1).clamp(min=1)
        best_iou, best = iou.max(dim=1)
    return best, best_iou >= POINTER_MIN_IOU


def pointer_loss(logits: torch.Tensor, object_masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE of pointer logits [N, K] on the object token whose mask (logits [N, K, h, w]) best overlaps each target
    [N, h, w]; targets no object shows with IoU >= POINTER_MIN_IOU are skipped (0 when none is left)."""
    best, valid = pointer_targets(object_masks, targets)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), best[valid])
