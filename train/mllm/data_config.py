"""The training samples a config's ``data`` section names: shapeworld conversations made in-process, or a
rate-weighted mixture of datasets on disk (LISA's sem_seg / refer_seg / vqa / reason_seg)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from mllm.objects import ObjectTokens
from train.data.shapeworld import generate_scene, scene_seed
from train.data.shapeworld.chat import KINDS, scene_chats
from train.data.shapeworld.scene import Scene
from train.mllm.config import DataSection, MixtureSection
from train.mllm.samples import MllmSample, Proposer, SampleSource


class ShapeworldChats:
    """Sample ``i``: one conversation about train scene ``i mod scenes``, drawn by ``default_rng([seed, i])``:
    first a kind (of ``kinds``, at ``kind_rates``; uniform over the scene's conversations when no rates are
    given), then a conversation of that kind. Images uint8 [H, W, 3], one mask per ``[SEG]``.

    With the model's proposer (:meth:`use_proposer`; the trainer attaches it when GLEE is frozen) samples carry
    their scene's object tokens, computed once per scene, and ``caption`` conversations ask about those
    proposals ("What is <obj3>?"). Without one, captions cite the ground-truth objects by index (enough to
    build a vocabulary, not to train on).
    """

    name = "shapeworld"

    def __init__(self, scenes: int, kinds: list[str], seed: int = 0, split: str = "train",
                 kind_rates: dict[str, float] | None = None):
        if scenes < 1:
            raise ValueError(f"data.scenes must be >= 1, got {scenes}")
        if not kinds or any(k not in KINDS for k in kinds):
            raise ValueError(f"data.kinds must be a non-empty subset of {list(KINDS)}, got {kinds}")
        rates = dict(kind_rates or {})
        if unknown := [k for k in rates if k not in kinds]:
            raise ValueError(f"data.kind_rates names kinds {unknown} that are not in data.kinds {kinds}")
        if any(v < 0 for v in rates.values()) or (rates and not any(v > 0 for v in rates.values())):
            raise ValueError(f"data.kind_rates must be >= 0 with at least one > 0, got {rates}")
        self.scenes, self.kinds, self.seed, self.split, self.kind_rates = scenes, list(kinds), seed, split, rates
        self._scene = lru_cache(maxsize=256)(self._make_scene)
        self._propose: Proposer | None = None
        self._objects: dict[int, ObjectTokens] = {}

    def __len__(self) -> int:
        return self.scenes

    def _make_scene(self, index: int) -> Scene:
        return generate_scene(scene_seed(self.split, index, self.seed), split=self.split)

    @property
    def needs_proposer(self) -> bool:
        return "caption" in self.kinds

    def use_proposer(self, propose: Proposer) -> None:
        """Cite (and carry) the object tokens ``propose(image)`` gives: a frozen GLEE's, computed once a scene."""
        self._propose, self._objects = propose, {}

    def _scene_objects(self, index: int, scene: Scene) -> ObjectTokens | None:
        if self._propose is None:
            return None
        if index not in self._objects:
            self._objects[index] = self._propose(scene.image)
        return self._objects[index]

    def sample(self, index: int) -> MllmSample:
        """Sample ``index``: a conversation of one of the kinds on scene ``index % scenes``, or on the next scene
        that has one (ValueError when none of the scenes has)."""
        if index < 0:
            raise IndexError(f"shapeworld: sample index must be >= 0, got {index}")
        for offset in range(self.scenes):
            found = self._sample_on(index + offset)
            if found is not None:
                return found
        raise ValueError(f"shapeworld: none of the {self.scenes} scenes has a conversation of the kinds "
                         f"{list(self.kinds)}; use more scenes or other kinds")

    def _sample_on(self, index: int) -> MllmSample | None:
        scene_index = index % self.scenes
        scene = self._scene(scene_index)
        objects = self._scene_objects(scene_index, scene)
        boxes = None
        if self.needs_proposer:
            boxes = (objects.pixel_boxes(*scene.image.shape[:2]) if objects is not None
                     else np.stack([o.box for o in scene.objects]))
        rng = np.random.default_rng([self.seed, index])
        chats = [c for c in scene_chats(scene, rng, boxes) if c.kind in self.kinds]
        present = sorted({c.kind for c in chats}, key=self.kinds.index)
        if self.kind_rates:
            present = [k for k in present if self.kind_rates.get(k, 0) > 0]
        if not present:  # a scene without a conversation of these kinds
            return None
        if self.kind_rates:
            weights = np.array([self.kind_rates[k] for k in present])
            kind = present[int(rng.choice(len(present), p=weights / weights.sum()))]
            chats = [c for c in chats if c.kind == kind]
        chat = chats[int(rng.integers(len(chats)))]
        return MllmSample(scene.image, list(chat.turns), list(chat.masks), self.name,
                          {"scene": scene_index, "kind": chat.kind, **chat.meta}, objects)


def vocabulary_texts(source: SampleSource, count: int) -> list[str]:
    """The texts of ``count`` samples of ``source``, to build a word tokenizer from. On shapeworld every kind of
    ``data.kinds`` takes part whatever its rate: a kind at rate 0 in a first training stage (captions first, say)
    still needs its words in the next stage, which reuses the tokenizer."""
    if isinstance(source, ShapeworldChats) and source.kind_rates:
        source = ShapeworldChats(source.scenes, source.kinds, source.seed, source.split)
    return [text for i in range(count) for turn in source.sample(i).turns for text in turn]


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
        return ShapeworldChats(data.scenes, data.kinds, data.seed, kind_rates=data.kind_rates)
    return mixture_from_config(data.mixture, data.seed)
