"""Freeze policies: freezing, unfreezing by pattern (with a loud miss) and the trainable summary."""
from __future__ import annotations

import pytest
from torch import nn

from adapters.freeze import GleePolicy, freeze, trainable_summary, unfreeze_matching


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def test_freeze_then_unfreeze_by_pattern():
    model = freeze(_model())
    assert trainable_summary(model).trainable == 0 and trainable_summary(model).total == 4 * 4 + 4 + 4 * 2 + 2
    names = unfreeze_matching(model, [r"^2\."])
    assert names == ["2.bias", "2.weight"]
    summary = trainable_summary(model)
    assert summary.trainable == 10 and "10 of 30 parameters train (33.33 %)" == str(summary)


def test_pattern_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"no parameter name matches \['decoder'\]"):
        unfreeze_matching(_model(), ["decoder"])


def test_policies_parse_from_strings():
    assert GleePolicy("lora") is GleePolicy.LORA
    with pytest.raises(ValueError):
        GleePolicy("half")
