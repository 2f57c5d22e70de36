"""The in-process shapeworld source: kinds drawn at their rates, deterministic samples, captions that cite the
proposer's object tokens (computed once a scene), clear errors."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mllm.objects import ObjectTokens
from train.mllm.data_config import ShapeworldChats
from train.mllm.trainer import attach_proposer


def test_kinds_are_drawn_at_their_rates_and_samples_are_deterministic():
    source = ShapeworldChats(20, ["reasoning", "referring"], kind_rates={"reasoning": 3, "referring": 1})
    kinds = [source.sample(i).meta["kind"] for i in range(400)]
    assert abs(kinds.count("reasoning") / 400 - 0.75) < 0.07
    again = ShapeworldChats(20, ["reasoning", "referring"], kind_rates={"reasoning": 3, "referring": 1})
    assert again.sample(7).turns == source.sample(7).turns and again.sample(7).meta == source.sample(7).meta


def test_the_vocabulary_covers_kinds_at_rate_zero():
    from train.mllm.data_config import vocabulary_texts

    source = ShapeworldChats(20, ["reasoning", "referring"], kind_rates={"reasoning": 0, "referring": 1})
    assert {source.sample(i).meta["kind"] for i in range(100)} == {"referring"}
    texts = vocabulary_texts(source, 100)
    sampled = [text for i in range(100) for turn in source.sample(i).turns for text in turn]
    assert "segment" in " ".join(sampled) and "Which shape" not in " ".join(sampled)
    assert "Which shape" in " ".join(texts) and "segment" in " ".join(texts)  # both kinds' words
    plain = ShapeworldChats(20, ["reasoning", "referring"])
    assert vocabulary_texts(plain, 10) == [t for i in range(10) for turn in plain.sample(i).turns for t in turn]


@pytest.mark.parametrize("kwargs, message", [
    ({"kinds": ["riddle"]}, "subset of"),
    ({"kinds": ["reasoning"], "kind_rates": {"pair": 1}}, r"names kinds \['pair'\]"),
    ({"kinds": ["reasoning"], "kind_rates": {"reasoning": 0}}, "at least one > 0"),
])
def test_bad_kinds_and_rates_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapeworldChats(4, **kwargs)


def test_a_scene_without_the_kind_moves_on_and_none_at_all_is_named():
    source = ShapeworldChats(50, ["pair"], seed=14)
    assert source.sample(0).meta["scene"] == 1  # scene 0 has no pair conversation
    assert source.sample(0).turns == source.sample(1).turns
    with pytest.raises(ValueError, match=r"none of the 1 scenes has a conversation of the kinds \['pair'\]"):
        ShapeworldChats(1, ["pair"], seed=14).sample(0)


def reversed_truth(source: ShapeworldChats, calls: list[int]):
    """A proposer whose object k is the scene's ground-truth object n-1-k (boxes exact)."""

    def propose(image: np.ndarray) -> ObjectTokens:
        calls.append(1)
        index = next(i for i in range(source.scenes) if source._scene(i).image is image)
        objects = source._scene(index).objects[::-1]
        h, w = image.shape[:2]
        x0, y0, x1, y1 = torch.tensor(np.stack([o.box for o in objects]), dtype=torch.float32).unbind(-1)
        boxes = torch.stack([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], -1)
        k = len(objects)
        return ObjectTokens(torch.zeros(1, k, 4), boxes[None], torch.ones(1, k), torch.zeros(1, k, 2, 2),
                            torch.zeros(1, k, 3))

    return propose


def test_captions_cite_the_proposers_objects_computed_once_a_scene():
    source = ShapeworldChats(3, ["caption"])
    calls: list[int] = []
    source.use_proposer(reversed_truth(source, calls))
    for i in range(12):
        sample = source.sample(i)
        scene = source._scene(i % 3)
        k = int(re.fullmatch(r"What is <obj(\d+)>\?", sample.turns[0][0]).group(1))
        truth = scene.objects[len(scene.objects) - 1 - k]
        assert sample.turns[0][1].endswith(f"{truth.color} {truth.shape}.") and sample.masks == []
        assert sample.objects is not None and sample.objects.boxes.shape[1] == len(scene.objects)
    assert len(calls) == 3


def test_caption_conversations_need_a_models_proposals():
    source = ShapeworldChats(3, ["referring", "caption"])
    without_objects = SimpleNamespace(object_projector=None, frozen_glee=True)
    with pytest.raises(ValueError, match="num_objects > 0"):
        attach_proposer(source, without_objects)
    attach_proposer(ShapeworldChats(3, ["referring"]), without_objects)  # nothing cited: fine without proposals
