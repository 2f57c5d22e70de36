"""The auxiliary region losses: pooling weights, label mapping, per-level heads, the colour target, learning."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from train.glee.matcher import Target
from train.glee.region_loss import RegionClassifier, RegionOutput, region_weights


def _target(labels, boxes, masks=None) -> Target:
    return Target(torch.tensor(labels, dtype=torch.long), torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  masks)


def test_region_weights_from_masks_and_boxes_agree_for_box_shaped_masks():
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, 8:16, 0:16] = True  # rows 8..15, columns 0..15 -> cxcywh (0.25, 0.375, 0.5, 0.25)
    from_masks = region_weights(_target([0], [[0.25, 0.375, 0.5, 0.25]], masks), (4, 4))
    from_boxes = region_weights(_target([0], [[0.25, 0.375, 0.5, 0.25]]), (4, 4))
    expected = torch.zeros(4, 4)
    expected[1, 0:2] = 1.0
    torch.testing.assert_close(from_masks[0], expected)
    torch.testing.assert_close(from_boxes[0], expected)


def test_pooled_features_are_the_mask_means_per_level():
    classifier = RegionClassifier({"a": 2, "b": 1}, ["x", "y"])
    fmap_a = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    fmap_b = torch.ones(1, 1, 2, 2) * 5.0
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    pooled = classifier.pooled({"a": fmap_a, "b": fmap_b}, [_target([1], [[0.25, 0.25, 0.5, 0.5]], masks)])
    torch.testing.assert_close(pooled["a"], torch.tensor([[2.5, 18.5]]))
    torch.testing.assert_close(pooled["b"], torch.tensor([[5.0]]))


def test_labels_are_mapped_by_name_and_the_head_learns():
    torch.manual_seed(0)
    classifier = RegionClassifier({"f": 3}, ["circle", "square", "star"])
    # object i of class c sits in a feature map whose channel c is high: separable by the pooled features
    features = {"f": torch.zeros(3, 3, 4, 4)}
    for c in range(3):
        features["f"][c, c] = 1.0
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    batch_names = ["star", "circle", "square"]  # the batch's order differs from the source's
    targets = [_target([1], [[0.5, 0.5, 1, 1]], full), _target([2], [[0.5, 0.5, 1, 1]], full),
               _target([0], [[0.5, 0.5, 1, 1]], full)]
    optimizer = torch.optim.Adam(classifier.parameters(), lr=0.1)
    first = None
    for _ in range(60):
        terms = classifier(features, targets, batch_names).losses()
        loss, accuracy = terms["region_class"], terms["region_accuracy"]
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05 * first and float(accuracy) == 1.0
    assert set(terms) == {"region_class", "region_accuracy"}
    logits = classifier.heads[0](classifier.pooled(features, targets)["f"])
    assert logits.argmax(1).tolist() == [0, 1, 2]  # circle, square, star: the source's indices


def test_empty_batches_and_unknown_names():
    classifier = RegionClassifier({"f": 2}, ["a"])
    features = {"f": torch.zeros(1, 2, 4, 4)}
    empty = _target([], [], torch.zeros(0, 8, 8, dtype=torch.bool))
    output = classifier(features, [empty], ["a"])
    assert output.logits.shape == (1, 0, 1) and output.labels.shape == (0,)
    terms = output.losses()
    assert float(terms["region_class"].detach()) == 0.0 and terms["region_class"].requires_grad
    assert torch.isnan(terms["region_accuracy"])
    coloured = RegionClassifier({"f": 2}, ["a"], colour=True)
    terms = coloured(features, [empty], ["a"], images=torch.zeros(1, 3, 8, 8)).losses()
    assert float(terms["region_colour"].detach()) == 0.0 and terms["region_colour"].requires_grad
    with pytest.raises(ValueError, match="colour target needs the batch images"):
        coloured(features, [empty], ["a"])
    with pytest.raises(ValueError, match="'b', which is not one of the data source's category names"):
        classifier(features, [empty], ["b"])
    with pytest.raises(ValueError, match="category names"):
        RegionClassifier({"f": 2}, [])


def test_losses_average_the_heads_and_accuracy_sums_their_logits():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]],
                           [[0.0, 1.0], [0.0, 1.0], [0.0, 3.0]]])  # two heads; summed argmax: 0, 1, 1
    labels = torch.tensor([0, 1, 1])
    colours, targets = torch.zeros(2, 3, 3), torch.ones(3, 3)
    colours[1] = 1.0  # head 1 exact, head 0 off by 1 everywhere
    terms = RegionOutput(logits, labels, colours, targets).losses()
    assert float(terms["region_accuracy"]) == pytest.approx(1.0)
    expected = (F.cross_entropy(logits[0], labels) + F.cross_entropy(logits[1], labels)) / 2
    torch.testing.assert_close(terms["region_class"], expected)
    torch.testing.assert_close(terms["region_colour"], torch.tensor(0.5))


def test_per_level_heads_and_colour_targets_are_the_mask_mean_pixels():
    classifier = RegionClassifier({"fine": 2, "coarse": 3}, ["a", "b"], per_level=True, colour=True)
    assert [h.in_features for h in classifier.heads] == [2, 3] and classifier.heads[0].out_features == 2 + 3
    features = {"fine": torch.randn(1, 2, 4, 4), "coarse": torch.randn(1, 3, 2, 2)}
    images = torch.zeros(1, 3, 16, 16)
    images[0, :, :8, :8] = torch.tensor([1.0, -1.0, 0.5])[:, None, None]  # the object's quadrant
    images[0, :, 8:, 8:] = 7.0  # elsewhere: must not leak into the object's colour
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, :8, :8] = True
    output = classifier(features, [_target([1], [[0.25, 0.25, 0.5, 0.5]], masks)], ["a", "b"], images=images)
    assert output.logits.shape == (2, 1, 2) and output.colours.shape == (2, 1, 3)
    torch.testing.assert_close(output.colour_targets, torch.tensor([[1.0, -1.0, 0.5]]))
    # each head sees its own level only: the coarse head's output does not move when the fine level changes
    moved = classifier({"fine": features["fine"] + 1, "coarse": features["coarse"]},
                       [_target([1], [[0.25, 0.25, 0.5, 0.5]], masks)], ["a", "b"], images=images)
    torch.testing.assert_close(moved.logits[1], output.logits[1])
    assert not torch.allclose(moved.logits[0], output.logits[0])
