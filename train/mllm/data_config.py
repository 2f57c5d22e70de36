"""The training samples a config's ``data`` section names: shapeworld conversations made in-process, or a
rate-weighted mixture of datasets on disk (LISA's sem_seg / refer_seg / vqa / reason_seg)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from train.data.shapeworld import generate_scene, scene_seed
from train.data.shapeworld.chat import scene_chats
from train.data.shapeworld.scene import Scene
from train.mllm.config import DataSection, MixtureSection
from train.mllm.samples import MllmSample, SampleSource


class ShapeworldChats:
    """Sample ``i``: one conversation (of ``kinds``) about train scene ``i mod scenes``, chosen by
    ``default_rng([seed, i])``; images uint8 [H, W, 3], one mask per ``[SEG]``."""

    name = "shapeworld"

    def __init__(self, scenes: int, kinds: list[str], seed: int = 0, split: str = "train"):
        if scenes < 1:
            raise ValueError(f"data.scenes must be >= 1, got {scenes}")
        known = ("reasoning", "referring", "pair")
        if not kinds or any(k not in known for k in kinds):
            raise ValueError(f"data.kinds must be a non-empty subset of {list(known)}, got {kinds}")
        self.scenes, self.kinds, self.seed, self.split = scenes, list(kinds), seed, split
        self._scene = lru_cache(maxsize=256)(self._make_scene)

    def __len__(self) -> int:
        return self.scenes

    def _make_scene(self, index: int) -> Scene:
        return generate_scene(scene_seed(self.split, index, self.seed), split=self.split)

    def sample(self, index: int) -> MllmSample:
        if index < 0:
            raise IndexError(f"shapeworld: sample index must be >= 0, got {index}")
        scene_index = index % self.scenes
        scene = self._scene(scene_index)
        rng = np.random.default_rng([self.seed, index])
        chats = [c for c in scene_chats(scene, rng) if c.kind in self.kinds]
        if not chats:  # a scene without a conversation of these kinds: the next scene's
            return self.sample(index + 1)
        chat = chats[int(rng.integers(len(chats)))]
        return MllmSample(scene.image, list(chat.turns), list(chat.masks), self.name,
                          {"scene": scene_index, "kind": chat.kind, **chat.meta})


def _sem_seg(name: str, seed: int, images_dir: str, labels_dir: str, classes: str, class_layout: str = "ade20k",
             **kwargs):
    from train.mllm.sources import SemSegSource, ade20k_classes, cocostuff_classes, read_class_names

    layouts = {"ade20k": ade20k_classes, "cocostuff": cocostuff_classes}
    if class_layout not in layouts:
        raise ValueError(f"data.mixture.sources.{name}.class_layout must be one of {list(layouts)}, got {class_layout!r}")
    return SemSegSource(images_dir, labels_dir, layouts[class_layout](read_class_names(classes)), seed=seed,
                        name=name, **kwargs)


def _refer_seg(name: str, seed: int, **kwargs):
    from train.mllm.sources import ReferSegSource

    return ReferSegSource(seed=seed, name=name, **kwargs)


def _vqa(name: str, seed: int, **kwargs):
    from train.mllm.sources import VqaSource

    return VqaSource(name=name, **kwargs)


def _reason_seg(name: str, seed: int, **kwargs):
    from train.mllm.sources import ReasonSegSource

    return ReasonSegSource(seed=seed, name=name, **kwargs)


SOURCE_TYPES = {"sem_seg": _sem_seg, "refer_seg": _refer_seg, "vqa": _vqa, "reason_seg": _reason_seg}
"""``type`` of a mixture entry -> a builder taking (name, seed, **the entry's other keys)."""


def mixture_from_config(section: MixtureSection, seed: int) -> SampleSource:
    """The :class:`train.mllm.mixture.Mixture` of ``section.sources`` at ``section.rates``."""
    from train.mllm.mixture import Mixture

    if not section.sources:
        raise ValueError("data.source is mixture but data.mixture.sources is empty")
    sources = {}
    for name, entry in section.sources.items():
        entry = dict(entry)
        kind = entry.pop("type", None)
        if kind not in SOURCE_TYPES:
            raise ValueError(f"data.mixture.sources.{name}.type must be one of {list(SOURCE_TYPES)}, got {kind!r}")
        try:
            sources[name] = SOURCE_TYPES[kind](name, seed, **entry)
        except TypeError as error:
            raise ValueError(f"data.mixture.sources.{name}: {error}") from None
    return Mixture(sources, section.rates, seed)


def source_from_config(data: DataSection) -> SampleSource:
    """The training :class:`SampleSource` of a config's ``data`` section."""
    if data.source == "shapeworld":
        return ShapeworldChats(data.scenes, data.kinds, data.seed)
    return mixture_from_config(data.mixture, data.seed)
