"""shapeworld negative referring expressions: they match nothing, are mostly hard and deterministic."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from train.data.shapeworld import Placement, compose_scene, evaluate, generate_scenes, matches, referring_expressions
from train.data.shapeworld.referring import NEGATIVE_REASONS, negative_expressions


def place(shape, color, x, y, size="medium", radius=20.0):
    return Placement(shape, color, size, (float(x), float(y)), radius, 0.0, None)


def test_every_negative_matches_nothing_and_differs_from_the_positives():
    reasons, total = Counter(), 0
    for index, scene in enumerate(generate_scenes("val", 60, seed=3)):
        negatives = negative_expressions(scene, np.random.default_rng(index), 4)
        positives = {e.text for e in referring_expressions(scene, np.random.default_rng(index), max_per_object=5)}
        assert len(negatives) == 4  # every scene has enough forms (absent shapes and colours at least)
        assert len({n.text for n in negatives}) == len(negatives)
        for negative in negatives:
            result = evaluate(negative.form, scene)
            assert matches(negative.form, scene) == [] and result.borderline == (), negative
            assert negative.text == negative.form.text() and negative.kind == negative.form.kind
            assert negative.text not in positives and negative.reason in NEGATIVE_REASONS
            reasons[negative.reason] += 1
            total += 1
    assert set(reasons) == set(NEGATIVE_REASONS)
    assert reasons["absent attribute"] < 0.35 * total  # mostly hard negatives


def test_negatives_are_deterministic_and_counted():
    scene = next(generate_scenes("train", 1, start=4))
    first = negative_expressions(scene, np.random.default_rng(5), 5)
    again = negative_expressions(scene, np.random.default_rng(5), 5)
    assert [n.text for n in first] == [n.text for n in again]
    assert negative_expressions(scene, np.random.default_rng(5), 0) == []
    with pytest.raises(ValueError, match="count must be >= 0"):
        negative_expressions(scene, np.random.default_rng(5), -1)


def test_hard_negatives_on_a_hand_built_scene():
    # green things and stars but no green star; the only star is right of the (unique) blue square
    scene = compose_scene([
        place("circle", "green", 40, 60), place("star", "red", 200, 128), place("square", "blue", 100, 128),
    ])
    everything = {n.text: n.reason for n in negative_expressions(scene, np.random.default_rng(0), 10_000)}
    assert everything["the green star"] == "absent combination"
    assert everything["the red circle"] == "absent combination"
    assert everything["the star left of the square"] == "relation fails"  # anchors: shortest unique names
    assert everything["the second star from the left"] == "too few"
    assert everything["the cross"] == "absent attribute"
    assert "the star right of the square" not in everything  # it holds
    assert not {"the green circle", "the star", "the red star"} & set(everything)
