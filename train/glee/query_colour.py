"""An auxiliary training loss that makes the decoder query which found an object carry the object's colour.

Not part of the official GLEE recipe and off by default (``loss.query_colour_weight: 0``). When on, a linear head
on the final decoder layer's normed query states (``DecoderOutput.hs[-1]``) regresses the mean colour (of the
normalised input image) of the object each query was Hungarian-matched to, with mean squared error. The head
lives in the trainer (optimised and checkpointed with it) and is not part of the saved model.

Why: GLEE scores a query against a prompt by a dot product of the query state with the prompt's embedding, so a
colour word can only select objects whose query states carry colour. The bundled nano model's queries carried
little (linear probe 0.17 for 10 colours, chance 0.10; ``benchmarks/feature_probe.py``) although its backbone
does (res3 0.88): category prompts (shape names) never ask for colour. On 150 validation expressions the
referent was among the queries' boxes 0.99 of the time but ranked first only 0.59; among the attribute
expressions the wrong picks were mostly colour-only ("the cyan shape" picking a shape of another colour).

Measured (not shipped): 1,500 steps from nano stage 15 at weight 2 (stage 15's recipe, data seed 19, 40 min on two
threads) lowered every held-out figure: referring Acc@0.5 0.567 -> 0.547, box AP50 0.869 -> 0.856, mask AP50
0.853 -> 0.838; the referent ranked first 0.63 -> 0.59 of the time. Colour in the queries is not what limits nano's
referring; the loss stays available for checkpoints where it might be.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from train.glee.matcher import Target
from train.glee.region_loss import mean_colours


class QueryColourHead(nn.Module):
    """Linear head: query state [C] -> mean colour [3] of the object the query found."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.linear = nn.Linear(hidden_dim, 3)

    def forward(self, queries: torch.Tensor, matched: Sequence[tuple[torch.Tensor, torch.Tensor]],
                targets: Sequence[Target], images: torch.Tensor) -> torch.Tensor:
        """Mean squared colour error of the matched queries.

        ``queries`` [B, Q, C] (final normed decoder states); ``matched`` per image (query_index, target_index) as
        returned by the matcher; ``targets`` with masks (their boxes otherwise); ``images`` [B, 3, H, W] the
        normalised padded inputs. A batch without matches gives 0 with a graph."""
        if not (len(matched) == len(targets) == queries.shape[0] == images.shape[0]):
            raise ValueError(f"need one entry per image, got {len(matched)} matches, {len(targets)} targets, "
                             f"{queries.shape[0]} query sets and {images.shape[0]} images")
        per_image = mean_colours(images, targets, (images.shape[-2] // 4, images.shape[-1] // 4)).split(
            [len(t) for t in targets])
        picked, wanted = [], []
        for b, (query_index, target_index) in enumerate(matched):
            if len(query_index):
                picked.append(queries[b, query_index.to(queries.device)])
                wanted.append(per_image[b][target_index.to(per_image[b].device)])
        if not picked:
            return self.linear(queries[:, :1]).sum() * 0.0
        colours = self.linear(torch.cat(picked).to(self.linear.weight.dtype))
        return F.mse_loss(colours, torch.cat(wanted).to(colours.dtype))
