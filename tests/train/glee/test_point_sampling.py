"""point_sample against hand-computed bilinear values; PointRend importance sampling."""
from __future__ import annotations

import pytest
import torch

from train.glee.point_sampling import point_sample, uncertain_point_coords, uniform_points


def test_point_sample_hand_values():
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])        # [1, 1, 2, 2]; pixel centres at 0.25 / 0.75
    coords = torch.tensor([[[0.25, 0.25], [0.25, 0.75], [0.5, 0.25], [0.5, 0.5], [0.625, 0.75], [0.0, 0.0]]])
    values = point_sample(image, coords)
    assert values.shape == (1, 1, 6)
    # (x, y) order: (0.25, 0.75) is column 0 of row 1; (0.625, 0.75) is 3/4 of the way from 3 to 4;
    # the top-left corner blends the 1 with three zero-padding neighbours.
    assert values[0, 0].tolist() == pytest.approx([1.0, 3.0, 1.5, 2.5, 3.75, 0.25])


def test_point_sample_channels_and_gradient():
    maps = torch.arange(8.0).view(1, 2, 2, 2).requires_grad_()
    values = point_sample(maps, torch.tensor([[[0.5, 0.5]]]))
    assert values.flatten().tolist() == pytest.approx([1.5, 5.5])
    values.sum().backward()
    assert maps.grad.flatten().tolist() == pytest.approx([0.25] * 8)


def test_point_sample_bad_shapes():
    with pytest.raises(ValueError, match=r"coords \[N, P, 2\]"):
        point_sample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3))


def _ramp(num_maps: int = 2, size: int = 32) -> torch.Tensor:
    """Logits 40 * (x - 0.5): zero (most uncertain) on the vertical line x = 0.5."""
    x = (torch.arange(size) + 0.5) / size
    return (40 * (x - 0.5)).expand(num_maps, 1, size, size).contiguous()


def test_uncertain_points_concentrate_on_the_zero_crossing():
    gen = torch.Generator().manual_seed(0)
    coords = uncertain_point_coords(_ramp(), 100, oversample_ratio=10.0, importance_sample_ratio=0.75, generator=gen)
    assert coords.shape == (2, 100, 2)
    assert ((coords >= 0) & (coords <= 1)).all()
    distance = (coords[..., 0] - 0.5).abs()
    # 75 importance points: the 75 smallest |x - 0.5| of 1000 uniform candidates (~0.0375 expected max)
    assert distance[:, :75].max() < 0.06
    # the 25 random points are uniform: some lie far from the line
    assert distance[:, 75:].max() > 0.2


def test_uncertain_points_are_reproducible_and_uniform_without_importance():
    first = uncertain_point_coords(_ramp(), 50, generator=torch.Generator().manual_seed(3))
    again = uncertain_point_coords(_ramp(), 50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    uniform = uncertain_point_coords(_ramp(1), 2000, importance_sample_ratio=0.0,
                                     generator=torch.Generator().manual_seed(0))
    assert (uniform[0, :, 0] - 0.5).abs().mean().item() == pytest.approx(0.25, abs=0.02)


def test_uncertain_points_empty_and_bad_arguments():
    assert uncertain_point_coords(torch.zeros(0, 1, 4, 4), 8).shape == (0, 8, 2)
    with pytest.raises(ValueError, match="oversample_ratio"):
        uncertain_point_coords(_ramp(), 8, oversample_ratio=0.5)
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        uncertain_point_coords(_ramp(), 8, importance_sample_ratio=1.5)
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        uncertain_point_coords(torch.zeros(2, 3, 4, 4), 8)


def test_uniform_points_follow_the_generator():
    points = uniform_points(2, 5, "cpu", generator=torch.Generator().manual_seed(7))
    assert torch.equal(points, torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(7)))
    assert ((points >= 0) & (points < 1)).all()
