"""shapeworld referring expressions: uniqueness on generated scenes and hand-built cases."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from train.data.shapeworld import (
    Description,
    Placement,
    ReferringForm,
    attribute_phrase,
    compose_scene,
    evaluate,
    generate_scenes,
    matches,
    referring_expressions,
)
from train.data.shapeworld.referring import KINDS


def place(shape, color, x, y, size="medium", radius=20.0):
    return Placement(shape, color, size, (float(x), float(y)), radius, 0.0, None)


def test_every_generated_expression_refers_to_exactly_its_target():
    rng = np.random.default_rng(0)
    kinds, covered, total = Counter(), 0, 0
    for scene in generate_scenes("val", 60, seed=1):
        expressions = referring_expressions(scene, rng)
        total += len(scene.objects)
        covered += len({e.target for e in expressions})
        for expression in expressions:
            result = evaluate(expression.form, scene)
            assert result.matches == (expression.target,) and not result.borderline, expression
            assert expression.text == expression.form.text() == expression.text.lower()
            assert expression.kind == expression.form.kind
            kinds[expression.kind] += 1
        assert Counter(e.target for e in expressions).most_common(1)[0][1] <= 3
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 5
    assert covered >= 0.95 * total


def test_expressions_are_deterministic_and_short_first():
    scene = next(generate_scenes("train", 1, start=4))
    first = referring_expressions(scene, np.random.default_rng(5))
    again = referring_expressions(scene, np.random.default_rng(5))
    assert [(e.text, e.target) for e in first] == [(e.text, e.target) for e in again]
    by_target = {}
    for expression in first:
        by_target.setdefault(expression.target, []).append(expression)
    for target, expressions in by_target.items():
        attribute = [e for e in expressions if e.kind == "attribute"]
        if attribute:
            assert expressions[0] is attribute[0] and len(attribute) == 1


def test_ordinal_on_hand_built_scene():
    scene = compose_scene([
        place("circle", "red", 40, 128), place("circle", "red", 130, 60), place("square", "blue", 90, 200),
        place("circle", "red", 210, 135),
    ])
    second_left = ReferringForm("ordinal", Description(shape="circle"), ordinal=2, direction="left")
    assert second_left.text() == "the second circle from the left"
    assert matches(second_left, scene) == [1]
    assert matches(ReferringForm("ordinal", Description(), ordinal=2, direction="left"), scene) == [2]
    assert matches(ReferringForm("ordinal", Description(shape="circle"), ordinal=2, direction="right"), scene) == [1]
    # the two lower circles are 7 px apart vertically: counting from the top is ambiguous past the first
    ambiguous = evaluate(ReferringForm("ordinal", Description(shape="circle"), ordinal=2, direction="top"), scene)
    assert ambiguous.matches == () and set(ambiguous.borderline) == {0, 1, 3}
    texts = {e.text for e in referring_expressions(scene, np.random.default_rng(0), max_per_object=5) if e.target == 1}
    assert texts & {"the second circle from the left", "the topmost object", "the topmost circle"}


def test_spatial_between_and_superlative_on_hand_built_scene():
    scene = compose_scene([
        place("star", "yellow", 40, 128), place("square", "blue", 128, 128), place("star", "green", 220, 128),
        place("triangle", "red", 128, 30, size="small", radius=12.0),
        place("triangle", "red", 128, 228, size="large", radius=26.0),
        place("circle", "white", 236, 24, size="small", radius=6.0),
    ])
    star = Description(shape="star")
    blue_square = Description(shape="square", color="blue")
    left = ReferringForm("spatial", star, "left of", (blue_square,))
    assert left.text() == "the star left of the blue square"
    assert matches(left, scene) == [0]
    assert matches(ReferringForm("spatial", star, "right of", (blue_square,)), scene) == [2]
    assert matches(ReferringForm("spatial", Description(shape="triangle"), "above", (blue_square,)), scene) == [3]
    ends = (Description(color="yellow"), Description(color="green"))
    between = ReferringForm("between", Description(), "between", ends)
    assert between.text() == "the object between the yellow shape and the green shape"
    assert matches(between, scene) == [1] and not evaluate(between, scene).borderline
    near = compose_scene(scene.objects + [place("circle", "white", 128, 190, size="small", radius=10.0)])
    assert evaluate(between, near).matches == (1,) and evaluate(between, near).borderline == (6,)
    largest = ReferringForm("superlative", Description(shape="triangle"), extreme="largest")
    assert largest.text() == "the largest triangle" and matches(largest, scene) == [4]
    assert matches(ReferringForm("superlative", Description(), extreme="smallest"), scene) == [5]
    assert matches(ReferringForm("superlative", Description(), extreme="leftmost"), scene) == [0]
    # an anchor that is not unique makes a relation meaningless
    assert matches(ReferringForm("spatial", Description(shape="square"), "right of", (star,)), scene) == []


def test_borderline_positions_are_never_used():
    # the green circle is only 5 % of the width left of the square: "left of" is borderline
    scene = compose_scene([
        place("circle", "red", 40, 60), place("circle", "green", 115, 200), place("square", "blue", 128, 128),
    ])
    left = ReferringForm("spatial", Description(shape="circle"), "left of", (Description(shape="square"),))
    result = evaluate(left, scene)
    assert result.matches == (0,) and result.borderline == (1,)
    for expression in referring_expressions(scene, np.random.default_rng(1), max_per_object=5):
        assert expression.text != "the circle left of the square"
    equal = compose_scene([place("hexagon", "red", 60, 60), place("hexagon", "blue", 180, 180, radius=21.0)])
    assert matches(ReferringForm("superlative", Description(shape="hexagon"), extreme="largest"), equal) == []


def test_phrases_and_validation():
    obj = compose_scene([place("circle", "red", 50, 50, size="small", radius=12.0)]).objects[0]
    assert attribute_phrase(obj) == "small red circle"
    assert Description(color="red").phrase() == "red shape" and Description().phrase() == "object"
    with pytest.raises(ValueError, match="needs 1 anchors"):
        ReferringForm("spatial", Description(), "left of")
    with pytest.raises(ValueError, match="kind must be one of"):
        ReferringForm("colour", Description())
    with pytest.raises(ValueError, match="max_per_object"):
        referring_expressions(compose_scene([]), np.random.default_rng(0), max_per_object=0)
