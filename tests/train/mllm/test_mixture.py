"""Mixture: draws follow the rates (LISA's 9:3:3:1), are deterministic in (seed, index), nest, and bad mixtures
are refused with the problem named; the shapeworld LISA mixture end to end."""
from __future__ import annotations

import numpy as np
import pytest

from mllm.tokens import SEG_TOKEN
from train.mllm.mixture import LISA_RATES, Mixture
from train.mllm.samples import MllmSample
from train.mllm.shapeworld_mixture import shapeworld_mixture, write_shapeworld_mixture

DRAWS = 4000


class Counter:
    """A source of ``n`` records whose samples carry the index they were asked for."""

    def __init__(self, name: str, n: int = 5):
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def sample(self, index: int) -> MllmSample:
        return MllmSample(np.zeros((2, 2, 3), np.uint8), [], [], self.name, {"index": index})


def lisa_sources() -> dict[str, Counter]:
    return {name: Counter(name) for name in LISA_RATES}


def test_draws_follow_the_rates():
    mixture = Mixture(lisa_sources(), LISA_RATES, seed=3)
    assert len(mixture) == 20
    names = [mixture.pick(i)[0] for i in range(DRAWS)]
    for name, rate in LISA_RATES.items():  # 0.5625 / 0.1875 / 0.1875 / 0.0625; 4 sigma ~ 0.031 at most
        assert abs(names.count(name) / DRAWS - rate / 16) < 0.03, (name, names.count(name))
    skewed = Mixture(lisa_sources(), {"sem_seg": 0, "refer_seg": 1, "vqa": 0, "reason_seg": 3}, seed=3)
    names = [skewed.pick(i)[0] for i in range(DRAWS)]
    assert set(names) == {"refer_seg", "reason_seg"} and abs(names.count("reason_seg") / DRAWS - 0.75) < 0.03


def test_sample_is_deterministic_in_seed_and_index():
    a, b = Mixture(lisa_sources(), seed=1), Mixture(lisa_sources(), seed=1)
    picks = [a.pick(i) for i in range(50)]
    assert picks == [b.pick(i) for i in range(50)]
    assert picks != [Mixture(lisa_sources(), seed=2).pick(i) for i in range(50)]
    assert len({inner for _, inner in picks}) == 50  # record indices are drawn, not the mixture index
    sample = a.sample(7)
    assert (sample.source, sample.meta["index"], sample.meta["mixture"]) == (picks[7][0], picks[7][1], [picks[7][0]])
    with pytest.raises(IndexError, match="index must be >= 0"):
        a.pick(-1)


def test_mixtures_nest():
    sem_seg = Mixture({"ade20k": Counter("ade20k"), "cocostuff": Counter("cocostuff")}, {"ade20k": 1, "cocostuff": 1},
                      seed=0, name="sem_seg")
    outer = Mixture({"sem_seg": sem_seg, "vqa": Counter("vqa")}, {"sem_seg": 1, "vqa": 1}, seed=0)
    samples = [outer.sample(i) for i in range(400)]
    paths = {tuple(s.meta["mixture"]) for s in samples}
    assert paths == {("sem_seg", "ade20k"), ("sem_seg", "cocostuff"), ("vqa",)}
    share = sum(s.source == "ade20k" for s in samples) / len(samples)
    assert 0.18 < share < 0.32  # 1/2 * 1/2


@pytest.mark.parametrize("sources, rates, message", [
    ({}, LISA_RATES, "empty mixture"),
    (lisa_sources(), {}, "no rates given"),
    (lisa_sources(), {**LISA_RATES, "ade20k": 1}, r"rates name unknown sources \['ade20k'\]"),
    (lisa_sources(), {"sem_seg": 1, "vqa": 1, "reason_seg": 1}, r"sources \['refer_seg'\] have no rate"),
    (lisa_sources(), {**LISA_RATES, "vqa": -1}, r"rate of 'vqa' must be a finite number >= 0, got -1"),
    (lisa_sources(), {**LISA_RATES, "vqa": float("nan")}, r"rate of 'vqa' must be a finite number"),
    (lisa_sources(), {**LISA_RATES, "vqa": "3"}, r"rate of 'vqa' must be a finite number >= 0, got '3'"),
    (lisa_sources(), dict.fromkeys(LISA_RATES, 0), "rates sum to 0"),
    ({**lisa_sources(), "vqa": Counter("vqa", 0)}, LISA_RATES, r"sources \['vqa'\] have no records"),
])
def test_bad_mixtures_are_refused(sources, rates, message):
    with pytest.raises(ValueError, match=message):
        Mixture(sources, rates, seed=0)


def test_an_unrated_empty_source_is_fine():
    mixture = Mixture({**lisa_sources(), "vqa": Counter("vqa", 0)}, {**LISA_RATES, "vqa": 0}, seed=0)
    assert "vqa" not in {mixture.pick(i)[0] for i in range(200)}


def test_shapeworld_lisa_mixture(tmp_path):
    write_shapeworld_mixture(tmp_path, "val", 2, seed=1)
    mixture = shapeworld_mixture(tmp_path, "val", seed=1)
    samples = [mixture.sample(i) for i in range(40)]
    assert {s.source for s in samples} == set(LISA_RATES)
    for sample in samples:
        assert sum(answer.count(SEG_TOKEN) for _, answer in sample.turns) == len(sample.masks)
        assert all(mask.shape == sample.image.shape[:2] for mask in sample.masks)
        assert (len(sample.masks) == 0) == (sample.source == "vqa" or sample.meta.get("explanatory") == "text_only")
    again = shapeworld_mixture(tmp_path, "val", seed=1).sample(11)
    assert again.turns == samples[11].turns and again.source == samples[11].source
