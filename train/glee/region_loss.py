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

Per-level heads with the colour target (``loss.region_per_level``, ``loss.region_colour_weight``;
``train/recipes/nano_stage8_backbone.yaml``, 600 steps from stage 7) gave colour back to the deep levels (probes
res4 0.37 -> 0.93, res5 0.16 -> 0.73) while their shape read improved (res4 0.80 -> 0.91, res5 0.67 -> 0.88).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

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


class RegionOutput(NamedTuple):
    """What :class:`RegionClassifier` predicts for the N objects of a batch, from G heads (one over all levels
    concatenated, or one per level).

    ``logits`` [G, N, K] over the source's names; ``labels`` [N] their indices; ``colours`` [G, N, 3] the predicted
    mean colours and ``colour_targets`` [N, 3] the objects' mean colours in the normalised input image (both None
    without the colour target).
    """

    logits: torch.Tensor
    labels: torch.Tensor
    colours: torch.Tensor | None = None
    colour_targets: torch.Tensor | None = None

    def losses(self) -> dict[str, torch.Tensor]:
        """{"region_class": cross-entropy averaged over the heads, "region_accuracy": share of objects whose summed
        logits pick the right name (detached; nan when N = 0), "region_colour": mean squared colour error averaged
        over the heads (with the colour target)}. Empty batches give losses of 0 that keep a graph."""
        zero = self.logits.sum() * 0.0
        if self.labels.numel() == 0:
            out = {"region_class": zero, "region_accuracy": torch.tensor(float("nan"))}
        else:
            out = {"region_class": torch.stack([F.cross_entropy(head, self.labels) for head in self.logits]).mean(),
                   "region_accuracy": (self.logits.sum(0).argmax(-1) == self.labels).float().mean().detach()}
        if self.colours is not None:
            out["region_colour"] = zero if self.labels.numel() == 0 else \
                (self.colours - self.colour_targets[None]).pow(2).mean()
        return out


class RegionClassifier(nn.Module):
    """Linear heads that name objects (and, optionally, tell their mean colour) from mask-pooled backbone features.

    Args:
        channels: backbone level name -> channels (the levels pooled, in this order).
        names: the category names of the data source; a batch's labels are mapped to them by name.
        per_level: one head per level, each trained on its own, instead of one head over all levels concatenated;
            a concatenated head can be satisfied by one level, per-level heads make every level carry the target.
        colour: also regress each object's mean colour (its mask-pooled pixels of the normalised input image), so
            the levels keep colour while they learn names.
    """

    def __init__(self, channels: Mapping[str, int], names: Sequence[str], per_level: bool = False,
                 colour: bool = False):
        super().__init__()
        if not names:
            raise ValueError("the region classification loss needs the data source's category names")
        self.levels = list(channels)
        self.names = list(names)
        self.colour = colour
        self._index = {name: i for i, name in enumerate(self.names)}
        self.groups = [[level] for level in self.levels] if per_level else [self.levels]
        outputs = len(self.names) + (3 if colour else 0)
        self.heads = nn.ModuleList(nn.Linear(sum(channels[level] for level in group), outputs)
                                   for group in self.groups)

    def pooled(self, features: Mapping[str, torch.Tensor], targets: Sequence[Target]) -> dict[str, torch.Tensor]:
        """Level -> [N, channels] features of the N objects of ``targets`` (image after image)."""
        out = {}
        for level in self.levels:
            size = tuple(features[level].shape[-2:])
            out[level] = torch.cat([mask_pooled(features[level][i], region_weights(t, size))
                                    for i, t in enumerate(targets)])
        return out

    def forward(self, features: Mapping[str, torch.Tensor], targets: Sequence[Target], batch_names: Sequence[str],
                images: torch.Tensor | None = None) -> RegionOutput:
        """Predictions for the N objects of a detection batch whose labels index ``batch_names``; ``images``
        [B, 3, H, W] (the normalised, padded inputs) are needed for the colour target."""
        try:
            to_global = torch.tensor([self._index[name] for name in batch_names], dtype=torch.long)
        except KeyError as error:
            raise ValueError(f"the batch prompts {error.args[0]!r}, which is not one of the data source's category "
                             f"names {self.names}") from None
        if self.colour and images is None:
            raise ValueError("the colour target needs the batch images")
        device = self.heads[0].weight.device
        labels = torch.cat([to_global[t.labels.cpu()] for t in targets]).to(device)
        pooled = self.pooled(features, targets)
        outputs = torch.stack([head(torch.cat([pooled[level] for level in group], 1).to(head.weight.dtype))
                               for head, group in zip(self.heads, self.groups)])
        k = len(self.names)
        if not self.colour:
            return RegionOutput(outputs, labels)
        return RegionOutput(outputs[..., :k], labels, outputs[..., k:], self._mean_colours(features, targets, images))

    def _mean_colours(self, features: Mapping[str, torch.Tensor], targets: Sequence[Target],
                      images: torch.Tensor) -> torch.Tensor:
        """[N, 3] mean normalised pixel of each object, pooled on the grid of the finest level."""
        size = max((tuple(features[level].shape[-2:]) for level in self.levels), key=lambda hw: hw[0] * hw[1])
        return mean_colours(images, targets, size).to(self.heads[0].weight.dtype)


def mean_colours(images: torch.Tensor, targets: Sequence[Target], size: tuple[int, int]) -> torch.Tensor:
    """[N, 3] mean pixel of the N objects of ``targets`` (image after image) in ``images`` [B, 3, H, W], pooled on
    an (h, w) = ``size`` grid."""
    small = F.adaptive_avg_pool2d(images.float(), size)
    return torch.cat([mask_pooled(small[i], region_weights(t, size)) for i, t in enumerate(targets)])
