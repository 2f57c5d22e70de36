"""The auxiliary region classification loss: pooling weights, label mapping and that it can learn."""
from __future__ import annotations

import pytest
import torch

from train.glee.matcher import Target
from train.glee.region_loss import RegionClassifier, loss_and_accuracy, region_weights


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
    torch.testing.assert_close(pooled, torch.tensor([[2.5, 18.5, 5.0]]))


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
        loss, accuracy = loss_and_accuracy(*classifier(features, targets, batch_names))
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.05 * first and float(accuracy) == 1.0
    logits = classifier.head(classifier.pooled(features, targets))
    assert logits.argmax(1).tolist() == [0, 1, 2]  # circle, square, star: the source's indices


def test_empty_batches_and_unknown_names():
    classifier = RegionClassifier({"f": 2}, ["a"])
    features = {"f": torch.zeros(1, 2, 4, 4)}
    empty = _target([], [], torch.zeros(0, 8, 8, dtype=torch.bool))
    logits, labels = classifier(features, [empty], ["a"])
    assert logits.shape == (0, 1) and labels.shape == (0,)
    loss, accuracy = loss_and_accuracy(logits, labels)
    assert float(loss) == 0.0 and loss.requires_grad and torch.isnan(accuracy)
    with pytest.raises(ValueError, match="'b', which is not one of the data source's category names"):
        classifier(features, [empty], ["b"])
    with pytest.raises(ValueError, match="category names"):
        RegionClassifier({"f": 2}, [])


def test_accuracy_counts_argmax_hits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    loss, accuracy = loss_and_accuracy(logits, torch.tensor([0, 1, 1]))
    assert float(accuracy) == pytest.approx(2 / 3)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1])))
