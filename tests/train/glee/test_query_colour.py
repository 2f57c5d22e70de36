"""The matched queries' colour loss: targets are the objects' mean pixels, only matched queries are supervised."""
from __future__ import annotations

import pytest
import torch

from train.glee.matcher import Target
from train.glee.query_colour import QueryColourHead


def _scene():
    """One 32x32 image: a red square (rows 0-15, cols 0-15) and a blue bar (rows 16-31, cols 8-15) on black."""
    image = torch.zeros(1, 3, 32, 32)
    image[0, 0, :16, :16] = 1.0
    image[0, 2, 16:, 8:16] = 1.0
    masks = torch.zeros(2, 32, 32)
    masks[0, :16, :16] = 1
    masks[1, 16:, 8:16] = 1
    target = Target(labels=torch.zeros(2, dtype=torch.long), boxes=torch.tensor([[0.25, 0.25, 0.5, 0.5],
                                                                                  [0.375, 0.75, 0.25, 0.5]]),
                    masks=masks)
    return image, target


def test_targets_are_mean_pixels_and_only_matched_queries_get_gradients():
    image, target = _scene()
    head = QueryColourHead(4)
    with torch.no_grad():  # the head reads the first 3 channels of a query as its colour
        head.linear.weight.copy_(torch.cat([torch.eye(3), torch.zeros(3, 1)], 1))
        head.linear.bias.zero_()
    queries = torch.zeros(1, 5, 4, requires_grad=True)
    exact = queries.detach().clone()
    exact[0, 2, :3] = torch.tensor([1.0, 0.0, 0.0])  # query 2 found the red square
    exact[0, 4, :3] = torch.tensor([0.0, 0.0, 1.0])  # query 4 found the blue bar
    matched = [(torch.tensor([2, 4]), torch.tensor([0, 1]))]
    assert head(exact, matched, [target], image).item() < 1e-10
    swapped = [(torch.tensor([4, 2]), torch.tensor([0, 1]))]
    assert head(exact, swapped, [target], image).item() == pytest.approx(4 / 6)  # two colours off by 1 in 2 of 3
    loss = head(queries, matched, [target], image)  # predictions all 0: error = the mean colours themselves
    assert loss.item() == pytest.approx(2 / 6)
    loss.backward()
    moved = queries.grad[0].abs().sum(1)
    assert moved[2] > 0 and moved[4] > 0 and moved[[0, 1, 3]].sum() == 0


def test_no_match_gives_zero_with_a_graph_and_sizes_are_checked():
    image, target = _scene()
    head = QueryColourHead(4)
    empty = Target(labels=torch.zeros(0, dtype=torch.long), boxes=torch.zeros(0, 4), masks=torch.zeros(0, 32, 32))
    loss = head(torch.randn(1, 5, 4), [(torch.zeros(0, dtype=torch.long),) * 2], [empty], image)
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="one entry per image, got 1 matches, 2 targets"):
        head(torch.randn(1, 5, 4), [(torch.tensor([0]), torch.tensor([0]))], [target, target], image)
