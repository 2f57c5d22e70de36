"""An auxiliary training loss that teaches a backbone trained from scratch what objects are.

Not part of the official GLEE recipe (whose backbones start ImageNet-pretrained) and off by default
(``loss.region_class_weight: 0``). When on, every annotated object of a detection batch is classified from its
backbone features — mean-pooled over the object's mask (its box when the data have no masks) on each of the
backbone's levels and concatenated — by a linear head over the data source's category names, with cross-entropy.
The head lives in the trainer (optimised and checkpointed with it) and is not part of the saved model: inference
is unchanged.

Why: GLEE's classification signal reaches the backbone only through the focal class loss of the decoder's
matched queries. The bundled nano model, trained from scratch that way, ended with backbone features that carry
colour but hardly any shape identity (``benchmarks/feature_probe.py``: linear probes on mask-pooled res3..res5
features of 400 held-out objects read 8 shapes at 0.21-0.32 accuracy, chance 0.125; colour at 0.37-0.99), which
caps its category-prompted AP.

Measured (nano stage 4, ``train/recipes/nano_stage4.yaml``): at weight 2 over 450 steps of batch 8 the loss fell
from 2.9 to ~1.6 and did not change the held-out figures against the same run without it (box AP50 0.381 vs
0.386); the backbone probes moved little (0.30-0.36). Alone, with a higher learning rate (``loss.glee_weight: 0``,
``train/recipes/nano_stage6_backbone.yaml``: batch 16, lr 1e-3, 800 steps), it taught the backbone the shapes
(held-out region accuracy 0.93), and after two stages of GLEE training on top (region weight 1) nano's box AP50
went from 0.40 to 0.57; the shape-only labels made the deep levels colour-blind (see the model card).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from train.glee.matcher import Target


def region_weights(target: Target, size: tuple[int, int]) -> torch.Tensor:
    """[n, h, w] non-negative pooling weights of a target's n objects at feature size ``size`` (h, w): the share of
    each feature cell the object's mask covers (its box, when the target has no masks)."""
    if target.masks is not None:
        regions = target.masks[:, None].float()
    else:
        height, width = size[0] * 8, size[1] * 8  # boxes are normalised: rasterise on a grid finer than the cells
        ys = (torch.arange(height, device=target.boxes.device) + 0.5) / height
        xs = (torch.arange(width, device=target.boxes.device) + 0.5) / width
        cx, cy, w, h = target.boxes.unbind(-1)
        inside_x = ((xs[None] >= (cx - w / 2)[:, None]) & (xs[None] < (cx + w / 2)[:, None]))
        inside_y = ((ys[None] >= (cy - h / 2)[:, None]) & (ys[None] < (cy + h / 2)[:, None]))
        regions = (inside_y[:, :, None] & inside_x[:, None, :])[:, None].float()
    return F.adaptive_avg_pool2d(regions, size)[:, 0]


def mask_pooled(feature_map: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[C, h, w] features averaged over n regions given by pooling weights [n, h, w] (:func:`region_weights`)
    -> [n, C]."""
    weights = weights.to(feature_map.dtype)
    return torch.einsum("chw,nhw->nc", feature_map, weights) / weights.sum((1, 2))[:, None].clamp_min(1e-6)


class RegionClassifier(nn.Module):
    """Linear classifier of objects from their mask-pooled backbone features.

    Args:
        channels: backbone level name -> channels (the levels pooled, in this order).
        names: the category names of the data source; a batch's labels are mapped to them by name.
    """

    def __init__(self, channels: Mapping[str, int], names: Sequence[str]):
        super().__init__()
        if not names:
            raise ValueError("the region classification loss needs the data source's category names")
        self.levels = list(channels)
        self.names = list(names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self.head = nn.Linear(sum(channels.values()), len(self.names))

    def pooled(self, features: Mapping[str, torch.Tensor], targets: Sequence[Target]) -> torch.Tensor:
        """[N, sum(channels)] features of the N objects of ``targets`` (image after image)."""
        rows = []
        for i, target in enumerate(targets):
            levels = []
            for level in self.levels:
                fmap = features[level][i]
                levels.append(mask_pooled(fmap, region_weights(target, tuple(fmap.shape[-2:]))))
            rows.append(torch.cat(levels, dim=1))
        return torch.cat(rows)

    def forward(self, features: Mapping[str, torch.Tensor], targets: Sequence[Target],
                batch_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, len(names)] and class indices [N] of the N objects of a detection batch whose labels index
        ``batch_names``."""
        try:
            to_global = torch.tensor([self._index[name] for name in batch_names], dtype=torch.long)
        except KeyError as error:
            raise ValueError(f"the batch prompts {error.args[0]!r}, which is not one of the data source's category "
                             f"names {self.names}") from None
        labels = torch.cat([to_global[t.labels.cpu()] for t in targets]).to(self.head.weight.device)
        if labels.numel() == 0:
            return self.head.weight.new_zeros(0, len(self.names)) + self.head.weight.sum() * 0.0, labels
        return self.head(self.pooled(features, targets).to(self.head.weight.dtype)), labels


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of logits [N, K] against class indices [N] (0, with a graph, when N = 0) and the share of
    the N objects classified right (detached; nan when N = 0)."""
    if labels.numel() == 0:
        return logits.sum() * 0.0, torch.tensor(float("nan"))
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean().detach()
