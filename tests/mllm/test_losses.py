"""LISA's losses, candidate matching and the pointer loss, on hand-computed cases."""
from __future__ import annotations

import math

import torch

from mllm.losses import mask_bce, mask_dice, match_candidates, pointer_loss, pointer_targets, token_ce


def test_dice_is_lisas_formula():
    logits = torch.tensor([[[0.0, 2.0], [-2.0, 1.0]]])
    target = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    p = logits.sigmoid()
    expected = 1 - (2 * (p * target).sum() / 1000 + 1e-6) / (p.sum() / 1000 + target.sum() / 1000 + 1e-6)
    assert torch.allclose(mask_dice(logits, target), expected[None])
    perfect = torch.full((1, 2, 2), -30.0)
    perfect[0, :, 1] = 30.0
    assert float(mask_dice(perfect, target)) < 1e-6 and float(mask_bce(perfect, target)) < 1e-6


def test_bce_is_the_per_pixel_mean():
    logits, target = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    assert math.isclose(float(mask_bce(logits, target)), math.log(2), rel_tol=1e-6)


def test_token_ce_ignores_unsupervised_positions():
    logits = torch.zeros(1, 4, 5)
    logits[0, 1, 3] = 10.0  # position 1 predicts token 3 (the label at position 2)
    labels = torch.tensor([[-100, -100, 3, -100]])
    assert float(token_ce(logits, labels)) < 1e-3
    assert float(token_ce(logits, torch.full((1, 4), -100))) == 0.0


def test_matching_picks_the_candidate_that_fits():
    target = torch.zeros(1, 8, 8)
    target[0, :4] = 1
    candidates = torch.full((1, 3, 8, 8), -5.0)
    candidates[0, 1, :4] = 5.0  # the one that fits
    candidates[0, 2, 4:] = 5.0
    assert match_candidates(candidates, target).tolist() == [1]


def test_pointer_loss_targets_the_best_overlapping_object_and_skips_unshown_targets():
    objects = torch.full((2, 3, 8, 8), -5.0)
    objects[:, 0, :4] = 5.0
    objects[:, 2, 4:] = 5.0
    targets = torch.zeros(2, 8, 8)
    targets[0, 5:] = 1  # mostly object 2
    targets[1, 0, 0] = 1  # a speck no object shows
    best, shown = pointer_targets(objects, targets)
    assert best[0] == 2 and shown.tolist() == [True, False]
    logits = torch.tensor([[0.0, 0.0, 8.0], [9.0, 0.0, 0.0]])
    loss = pointer_loss(logits, objects, targets)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits[:1], torch.tensor([2])))
    assert float(pointer_loss(logits[1:], objects[1:], targets[1:])) == 0.0
