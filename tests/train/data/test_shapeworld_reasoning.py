"""shapeworld reasoning queries: hand-built scenes with known answers, and wording over generated scenes."""
from __future__ import annotations

import re

import numpy as np
import pytest

from train.data.shapeworld import Placement, compose_scene, generate_scenes, reasoning_queries
from train.data.shapeworld import reasoning


@pytest.fixture
def phrases(monkeypatch):
    """Short phrases with explanations, so texts are fixed."""
    monkeypatch.setattr(reasoning, "SENTENCE_PROB", 0.0)
    monkeypatch.setattr(reasoning, "EXPLANATION_PROB", 1.0)


def scene_of(*objects):
    """Objects given as "color shape" strings, laid out on a row."""
    placements = []
    for index, spec in enumerate(objects):
        color, shape = spec.split()
        placements.append(Placement(shape, color, "medium", (30.0 + 45.0 * index, 128.0), 16.0, 0.0, None))
    return compose_scene(placements)


def answers(scene):
    return {query.text: query.targets for query in reasoning_queries(scene, np.random.default_rng(0))}


def test_basic_families(phrases):
    scene = scene_of("red circle", "blue square", "yellow triangle", "green hexagon")
    found = answers(scene)
    assert found["the shape that could roll"] == [0]
    assert found["the object with the most corners"] == [3]
    assert found["the object with the fewest corners"] == [0]
    assert found["the shape with no corners"] == [0]
    assert found["the shape with exactly three corners"] == [2]
    assert found["the shape with twice as many corners as a triangle"] == [3]
    assert found["the shape with one corner fewer than a square"] == [2]
    assert "the shape with as many corners as a square" not in found  # the square itself does not count
    mixing = {t: v for t, v in found.items() if t.startswith("the shape whose colour you get by mixing")}
    assert set(mixing) & {
        "the shape whose colour you get by mixing blue and yellow",
        "the shape whose colour you get by mixing yellow and blue",
    }
    assert all(v == [3] for v in mixing.values())
    assert found["the shapes whose colours you could mix to make green"] == [1, 2]
    assert found["the shapes whose colours you could mix to make orange"] == [0, 2]
    assert found["the shapes with warm colours"] == [0, 2]
    assert found["the shapes with cool colours"] == [1, 3]
    assert found["the shape with the colour of fresh grass"] == [3]
    things = ("a honeycomb cell", "a nut for a bolt")
    hexagon = [v for t, v in found.items() if t in {f"the shape that looks like {thing}" for thing in things}]
    assert hexagon == [[3]]


def test_explanations(phrases):
    queries = reasoning_queries(scene_of("red circle", "blue square"), np.random.default_rng(0))
    roll = next(q for q in queries if q.family == "roll")
    assert roll.explanation == "The medium red circle could roll because it is round and has no corners."
    assert not roll.is_sentence


def test_corner_queries_need_every_reading_to_agree(phrases):
    # star (10 corners, or 5 points) vs hexagon (6): "most corners" depends on the reading -> dropped
    assert not any("most corners" in text for text in answers(scene_of("red star", "blue hexagon", "white circle")))
    # star vs triangle: the star wins under both readings
    assert answers(scene_of("red star", "blue triangle"))["the object with the most corners"] == [0]
    # a cross may be read as four arm ends: "as many corners as a square" would then include it
    assert "the shape with as many corners as a square" not in answers(scene_of("red diamond", "blue cross"))
    assert answers(scene_of("red diamond", "blue circle"))["the shape with as many corners as a square"] == [0]
    assert not any("five corners" in text for text in answers(scene_of("red star", "blue pentagon")))


def test_ties_use_plural_wording(phrases):
    found = answers(scene_of("red hexagon", "blue hexagon", "yellow triangle"))
    assert found["the objects with the most corners"] == [0, 1]
    assert "the object with the most corners" not in found
    look_alike = {text: targets for text, targets in found.items() if text.startswith("the shapes that look like")}
    assert list(look_alike.values()) == [[0, 1]]


def test_odd_one_out(phrases):
    found = answers(scene_of("red square", "red star", "blue circle", "red cross"))
    assert found["the object whose colour differs from all the others"] == [2]
    assert "the object whose shape differs from all the others" not in found
    assert found["the shapes with warm colours"] == [0, 1, 3] and found["the shape with a cool colour"] == [2]
    assert not any("warm" in text for text in answers(scene_of("red square", "pink star", "blue circle")))


def test_generated_queries_are_consistent():
    rng = np.random.default_rng(3)
    plural = re.compile(r"\b(shapes|objects|ones)\b")
    families, sentences, explained = set(), 0, 0
    for scene in generate_scenes("test", 40, seed=2):
        queries = reasoning_queries(scene, rng)
        again = reasoning_queries(scene, np.random.default_rng(0))
        assert [q.targets for q in again] == [q.targets for q in reasoning_queries(scene, np.random.default_rng(0))]
        for query in queries:
            assert query.targets == sorted(set(query.targets)) and query.targets
            assert all(0 <= t < len(scene.objects) for t in query.targets)
            assert bool(plural.search(query.text)) == (len(query.targets) > 1), query
            families.add(query.family)
            sentences += query.is_sentence
            explained += query.explanation is not None
    assert families >= {"roll", "corner_extreme", "corner_count", "corner_relation", "mixing", "look_alike", "color_of"}
    assert sentences > 50 and explained > 50
