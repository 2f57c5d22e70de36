"""A rate-weighted mixture of sample sources (LISA's ``--dataset ... --sample_rates 9,3,3,1``).

Sample ``i`` draws, from ``default_rng([seed, i])``, a source with probability ``rate / sum(rates)`` and then a
random index into it (as LISA's sub-datasets ignore the index and draw a random image), so any index is a
deterministic sample and the sources' own randomness varies between draws of the same record. A Mixture is
itself a ``SampleSource``: nest one to split a kind uniformly over datasets (LISA's sem_seg over ADE20K,
COCO-Stuff, ...; refer_seg over refcoco, refcoco+, refcocog, refclef).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from train.mllm.samples import MllmSample, SampleSource

LISA_RATES: dict[str, float] = {"sem_seg": 9, "refer_seg": 3, "vqa": 3, "reason_seg": 1}
_INNER_INDICES = 2**62  # a source index is drawn below this and served modulo the source's length


class Mixture:
    """``sources`` by mixture name, ``rates`` by the same names (relative weights; 0 leaves a source out).

    ``length`` is the nominal epoch (default: the records of all rated sources); every index is valid.
    """

    def __init__(self, sources: Mapping[str, SampleSource], rates: Mapping[str, float] = LISA_RATES, seed: int = 0,
                 *, length: int | None = None, name: str = "mixture"):
        if not sources:
            raise ValueError("empty mixture: give at least one source")
        if not rates:
            raise ValueError(f"no rates given; give one per source ({', '.join(sources)})")
        if unknown := [key for key in rates if key not in sources]:
            raise ValueError(f"rates name unknown sources {unknown}; the sources are {list(sources)}")
        if unrated := [key for key in sources if key not in rates]:
            raise ValueError(f"sources {unrated} have no rate; give one (0 leaves a source out)")
        for key, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate < 0:
                raise ValueError(f"rate of {key!r} must be a finite number >= 0, got {rate!r}")
        total = float(sum(rates.values()))
        if total <= 0:
            raise ValueError(f"rates sum to 0 ({dict(rates)}); at least one source needs a positive rate")
        self.names = [key for key in sources if rates[key] > 0]
        if empty := [key for key in self.names if len(sources[key]) == 0]:
            raise ValueError(f"sources {empty} have no records but a positive rate")
        self.sources = {key: sources[key] for key in self.names}
        self.probabilities = np.array([rates[key] / total for key in self.names])
        self.length = sum(len(source) for source in self.sources.values()) if length is None else length
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        self.seed, self.name = seed, name

    def __len__(self) -> int:
        return self.length

    def pick(self, index: int) -> tuple[str, int]:
        """(mixture name of the source, index into it) of sample ``index``."""
        if index < 0:
            raise IndexError(f"{self.name}: sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        key = self.names[int(rng.choice(len(self.names), p=self.probabilities))]
        return key, int(rng.integers(_INNER_INDICES))

    def sample(self, index: int) -> MllmSample:
        key, inner = self.pick(index)
        sample = self.sources[key].sample(inner)
        sample.meta.setdefault("mixture", []).insert(0, key)
        return sample
