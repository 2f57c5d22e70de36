"""MinVIS-style online association of GLEE's per-frame queries (official ``MinVIS_inference``).

Frame t ≥ 1 is matched to the mean of the last ``memory`` matched track embeddings by Hungarian
assignment on ``1 - cosine``; every per-frame output is then reordered so that query slot ``q``
is one track through the whole clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment


def match_to_tracks(targets: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Permutation p such that ``current[p]`` aligns with ``targets`` ([Q, C] each) -> [Q] int64."""
    cur = current / current.norm(dim=1, keepdim=True)
    tgt = targets / targets.norm(dim=1, keepdim=True)
    cost = (1 - cur @ tgt.T).float().cpu()
    _, cols = linear_sum_assignment(cost.T.numpy())
    return torch.as_tensor(cols, dtype=torch.long, device=current.device)


@dataclass
class TrackAssociation:
    """Per-frame outputs reordered into tracks.

    Attributes:
        order: [T, Q] int64; ``order[t]`` indexes frame t's queries (``order[0]`` is the identity).
        match_targets: [T, Q, C]; the target embedding each frame was matched to (row 0 unused, zeros).
    """

    order: torch.Tensor
    match_targets: torch.Tensor


def associate(track_embeds: torch.Tensor, memory: int = 3) -> TrackAssociation:
    """Associate queries over frames. ``track_embeds``: [T, Q, C] -> :class:`TrackAssociation`."""
    if track_embeds.dim() != 3:
        raise ValueError(f"track_embeds must be [T, Q, C], got {tuple(track_embeds.shape)}")
    frames, queries, _ = track_embeds.shape
    orders = [torch.arange(queries, device=track_embeds.device)]
    matched = [track_embeds[0]]
    targets = [torch.zeros_like(track_embeds[0])]
    for t in range(1, frames):
        target = torch.stack(matched[-memory:]).mean(0)
        order = match_to_tracks(target, track_embeds[t])
        orders.append(order)
        matched.append(track_embeds[t][order])
        targets.append(target)
    return TrackAssociation(torch.stack(orders), torch.stack(targets))


def reorder(per_frame: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Apply the association: ``per_frame`` [T, Q, ...] -> [Q, T, ...] with query slot = track."""
    return torch.stack([per_frame[t][order[t]] for t in range(per_frame.shape[0])], dim=1)
