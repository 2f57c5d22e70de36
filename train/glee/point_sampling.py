"""PointRend point sampling for mask losses (as the official ``utils/point_features.py``).

Coordinates are (x, y) in [0, 1] of the whole map, so maps of different resolutions that cover the same
padded image are sampled at the same places.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def point_sample(input: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples: input [N, C, H, W], coords [N, P, 2] (x, y) in [0, 1] -> [N, C, P].

    ``grid_sample`` with ``align_corners=False`` and zero padding: (0, 0) is the top-left corner of the
    top-left pixel, pixel centres sit at ((j + 0.5) / W, (i + 0.5) / H).
    """
    if input.dim() != 4 or coords.dim() != 3 or coords.shape[-1] != 2 or coords.shape[0] != input.shape[0]:
        raise ValueError(f"point_sample expects input [N, C, H, W] and coords [N, P, 2]; got "
                         f"{tuple(input.shape)} and {tuple(coords.shape)}")
    grid = (2.0 * coords - 1.0).to(input.dtype).unsqueeze(2)
    return F.grid_sample(input, grid, align_corners=False).squeeze(3)


def uniform_points(num_maps: int, num_points: int, device: torch.device | str, dtype: torch.dtype = torch.float32,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform coords [num_maps, num_points, 2] in [0, 1) on ``device``.

    Drawn on the generator's device (then moved) when it differs from ``device``; a generator on ``device``
    avoids the copy.
    """
    source = torch.device(device) if generator is None else generator.device
    points = torch.rand(num_maps, num_points, 2, generator=generator, device=source, dtype=dtype)
    return points.to(device)


def uncertain_point_coords(logits: torch.Tensor, num_points: int, oversample_ratio: float = 3.0,
                           importance_sample_ratio: float = 0.75,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """PointRend training points: logits [N, 1, H, W] -> coords [N, num_points, 2] in [0, 1].

    ``int(num_points * oversample_ratio)`` uniform candidates are drawn per map; the
    ``int(importance_sample_ratio * num_points)`` with the smallest |interpolated logit| (most uncertain)
    are kept and the rest of the points are drawn uniformly. Not differentiable (coordinates only).
    """
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"uncertain_point_coords expects logits [N, 1, H, W]; got {tuple(logits.shape)}")
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    num_maps = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    options = dict(device=logits.device, dtype=logits.dtype, generator=generator)
    with torch.no_grad():
        candidates = uniform_points(num_maps, num_sampled, **options)
        uncertainty = -point_sample(logits, candidates)[:, 0].abs()
        keep = uncertainty.topk(num_uncertain, dim=1).indices
        chosen = candidates.gather(1, keep[..., None].expand(-1, -1, 2))
        random = uniform_points(num_maps, num_points - num_uncertain, **options)
        return torch.cat([chosen, random], dim=1)
