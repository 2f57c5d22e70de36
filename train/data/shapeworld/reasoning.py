"""Reasoning queries for shapeworld scenes: phrases that need one step of inference to resolve.

Families (each query names every object that satisfies it; an evaluator computes the targets):

* roll:           "the shape that could roll" (``ShapeKind.can_roll``)
* corner_extreme: "the object with the most corners" / "... the fewest corners"
* corner_count:   "the shape with exactly four corners", "the shape with no corners"
* corner_relation: "the shape with one more corner than a square", "... twice as many corners as a triangle"
* mixing:         "the shape whose colour you get by mixing blue and yellow"
* ingredients:    "the shapes whose colours you could mix to make green"
* look_alike:     "the shape that looks like a honeycomb cell"
* color_of:       "the shape with the colour of fresh grass"
* warmth:         "the shape with a warm colour" (only when every object is clearly warm or cool)
* odd_one_out:    "the shape whose colour differs from all the others"

Wording follows the number of targets: singular ("the shape that ...") only for one target, plural
("the shapes that ...") for several, so no query implies a unique answer that is not unique. Queries on
corner counts are evaluated under both readings of the corner counts (a star's 10 corners or its 5
points, a cross's 12 corners or its 4 arm ends; see ``vocab``) and dropped unless the readings agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from train.data.shapeworld.referring import attribute_phrase
from train.data.shapeworld.scene import Scene, SceneObject
from train.data.shapeworld.vocab import COLOR_OF, COOL_COLORS, MIXTURES, SHAPES, WARM_COLORS, plural

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
SENTENCE_PROB = 0.5  # share of queries worded as a long question instead of a short phrase
EXPLANATION_PROB = 0.5  # share of queries that carry an explanatory answer
CONVEX_KINDS = ("triangle", "square", "pentagon", "hexagon")  # reference kinds of corner relations


@dataclass
class ReasoningQuery:
    """A query, every object satisfying it (indices into ``scene.objects``, >= 1), whether it is a long
    question-style sentence (ReasonSeg's split) or a short phrase, an optional explanatory answer and the
    family that produced it."""

    text: str
    targets: list[int]
    is_sentence: bool
    explanation: str | None
    family: str = ""


@dataclass(frozen=True)
class _Candidate:
    """A query before wording is chosen: (singular, plural) phrases and sentences, and the explanation."""

    family: str
    targets: list[int]
    phrase: tuple[str, str]
    sentence: tuple[str, str]
    explanation: str


def corner_readings(shape: str) -> tuple[int, int]:
    """Corner count of a shape kind under the canonical reading and under the alternative one."""
    kind = SHAPES[shape]
    return kind.corners, (kind.corner_alternatives or (kind.corners,))[0]


def _names(objects: Sequence[SceneObject], targets: Sequence[int]) -> str:
    """ "the small red circle", "the red circle and the two blue crosses", "the a, the b and the c"."""
    phrases = [attribute_phrase(objects[i]) for i in targets]
    counts = {phrase: phrases.count(phrase) for phrase in phrases}
    names = [f"the {p}" if n == 1 else f"the {NUMBER_WORDS[n]} {plural(p)}" for p, n in counts.items()]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def _agreeing(objects: Sequence[SceneObject], select: Callable[[list[int]], list[int]]) -> list[int] | None:
    """``select(counts)`` under both corner readings; None when the readings give different targets."""
    found = [select([corner_readings(obj.shape)[reading] for obj in objects]) for reading in (0, 1)]
    return found[0] if found[0] == found[1] else None


def _roll(objects: Sequence[SceneObject]) -> list[_Candidate]:
    targets = [i for i, obj in enumerate(objects) if SHAPES[obj.shape].can_roll]
    if not targets:
        return []
    reason = "it is round and has" if len(targets) == 1 else "they are round and have"
    return [
        _Candidate(
            "roll",
            targets,
            ("the shape that could roll", "the shapes that could roll"),
            (
                "Which shape in this picture would roll away if you gave it a gentle push?",
                "Which shapes in this picture would roll away if you gave them a gentle push?",
            ),
            f"{_capital(_names(objects, targets))} could roll because {reason} no corners.",
        )
    ]


def _corner_extreme(objects: Sequence[SceneObject]) -> list[_Candidate]:
    found = []
    for word, pick, comparison in (("most", max, "more"), ("fewest", min, "fewer")):
        targets = _agreeing(objects, lambda counts: [i for i, n in enumerate(counts) if n == pick(counts)])
        if targets is None or len(targets) == len(objects):
            continue
        count = NUMBER_WORDS[SHAPES[objects[targets[0]].shape].corners]
        verb = "has" if len(targets) == 1 else "each have"
        found.append(
            _Candidate(
                "corner_extreme",
                targets,
                (f"the object with the {word} corners", f"the objects with the {word} corners"),
                (
                    f"If you counted the corners of every shape here, which one would have the {word}?",
                    f"If you counted the corners of every shape here, which ones would have the {word}?",
                ),
                f"{_capital(_names(objects, targets))} {verb} {count} corners, {comparison} than any other shape.",
            )
        )
    return found


def _corner_count(objects: Sequence[SceneObject]) -> list[_Candidate]:
    found = []
    for count in sorted({SHAPES[obj.shape].corners for obj in objects}):
        targets = _agreeing(objects, lambda counts: [i for i, n in enumerate(counts) if n == count])
        if not targets:
            continue
        amount = "no corners" if count == 0 else f"exactly {NUMBER_WORDS[count]} corners"
        found.append(
            _Candidate(
                "corner_count",
                targets,
                (f"the shape with {amount}", f"the shapes with {amount}"),
                (f"Which shape in the image has {amount}?", f"Which shapes in the image have {amount}?"),
                f"{_capital(_names(objects, targets))} {'has' if len(targets) == 1 else 'each have'} "
                f"{NUMBER_WORDS[count]} corners.",
            )
        )
    return found


_RELATIONS: tuple[tuple[str, Callable[[int, int], bool], str], ...] = (
    ("as many corners as", lambda n, ref: n == ref, "the same number"),
    ("one more corner than", lambda n, ref: n == ref + 1, "one more"),
    ("one corner fewer than", lambda n, ref: n == ref - 1, "one fewer"),
    ("twice as many corners as", lambda n, ref: n == 2 * ref, "twice as many"),
)


def _corner_relation(objects: Sequence[SceneObject]) -> list[_Candidate]:
    found = []
    for reference in CONVEX_KINDS:
        ref = SHAPES[reference].corners
        for wording, holds, how in _RELATIONS:
            targets = _agreeing(
                objects,
                lambda counts: [
                    i for i, n in enumerate(counts) if holds(n, ref) and objects[i].shape != reference
                ],
            )
            if not targets:
                continue
            article = "an" if reference[0] in "aeiou" else "a"
            count = NUMBER_WORDS[SHAPES[objects[targets[0]].shape].corners]
            found.append(
                _Candidate(
                    "corner_relation",
                    targets,
                    (
                        f"the shape with {wording} {article} {reference}",
                        f"the shapes with {wording} {article} {reference}",
                    ),
                    (
                        f"Which shape here has {wording} {article} {reference} has?",
                        f"Which shapes here have {wording} {article} {reference} has?",
                    ),
                    f"{article.capitalize()} {reference} has {NUMBER_WORDS[ref]} corners; "
                    f"{_names(objects, targets)} "
                    f"{'has' if len(targets) == 1 else 'each have'} {count}, {how}.",
                )
            )
    return found


def _mixing(objects: Sequence[SceneObject], rng: np.random.Generator) -> list[_Candidate]:
    found = []
    for pair, result in MIXTURES.items():
        targets = [i for i, obj in enumerate(objects) if obj.color == result]
        if not targets:
            continue
        first, second = rng.permutation(sorted(pair))
        found.append(
            _Candidate(
                "mixing",
                targets,
                (
                    f"the shape whose colour you get by mixing {first} and {second}",
                    f"the shapes whose colour you get by mixing {first} and {second}",
                ),
                (
                    f"If you mixed {first} and {second} paint, which shape here would match the colour you get?",
                    f"If you mixed {first} and {second} paint, which shapes here would match the colour you get?",
                ),
                f"Mixing {first} and {second} gives {result}, the colour of {_names(objects, targets)}.",
            )
        )
    return found


def _ingredients(objects: Sequence[SceneObject]) -> list[_Candidate]:
    found = []
    for pair, result in MIXTURES.items():
        first, second = sorted(pair)
        targets = [i for i, obj in enumerate(objects) if obj.color in pair]
        colors = {objects[i].color for i in targets}
        if colors != set(pair):
            continue
        found.append(
            _Candidate(
                "ingredients",
                targets,
                (f"the shapes whose colours you could mix to make {result}",) * 2,
                (f"Which shapes have the two colours you would mix to make {result} paint?",) * 2,
                f"{_capital(_names(objects, targets))} are {first} and {second}, "
                f"and mixing {first} with {second} makes {result}.",
            )
        )
    return found


def _look_alike(objects: Sequence[SceneObject], rng: np.random.Generator) -> list[_Candidate]:
    found = []
    for shape in sorted({obj.shape for obj in objects}):
        things = SHAPES[shape].looks_like
        if not things:
            continue
        thing = things[int(rng.integers(len(things)))]
        targets = [i for i, obj in enumerate(objects) if obj.shape == shape]
        article = "an" if shape[0] in "aeiou" else "a"
        found.append(
            _Candidate(
                "look_alike",
                targets,
                (f"the shape that looks like {thing}", f"the shapes that look like {thing}"),
                (
                    f"Which shape in the picture has the outline of {thing}?",
                    f"Which shapes in the picture have the outline of {thing}?",
                ),
                f"{_capital(thing)} is shaped like {article} {shape}, like {_names(objects, targets)}.",
            )
        )
    return found


def _color_of(objects: Sequence[SceneObject]) -> list[_Candidate]:
    found = []
    for thing, color in COLOR_OF.items():
        targets = [i for i, obj in enumerate(objects) if obj.color == color]
        if not targets:
            continue
        found.append(
            _Candidate(
                "color_of",
                targets,
                (f"the shape with the colour of {thing}", f"the shapes with the colour of {thing}"),
                (f"Which shape is the same colour as {thing}?", f"Which shapes are the same colour as {thing}?"),
                f"{_capital(thing)} is {color}, and so {'is' if len(targets) == 1 else 'are'} "
                f"{_names(objects, targets)}.",
            )
        )
    return found


def _warmth(objects: Sequence[SceneObject]) -> list[_Candidate]:
    if not all(obj.color in WARM_COLORS | COOL_COLORS for obj in objects):
        return []
    found = []
    for word, palette in (("warm", WARM_COLORS), ("cool", COOL_COLORS)):
        targets = [i for i, obj in enumerate(objects) if obj.color in palette]
        if not targets or len(targets) == len(objects):
            continue
        found.append(
            _Candidate(
                "warmth",
                targets,
                (f"the shape with a {word} colour", f"the shapes with {word} colours"),
                (
                    f"Which shape here is painted in a {word} colour?",
                    f"Which shapes here are painted in {word} colours?",
                ),
                f"{', '.join(sorted(palette))} are {word} colours; "
                f"{_names(objects, targets)} {'is' if len(targets) == 1 else 'are'} the "
                f"{'only one' if len(targets) == 1 else 'ones'} in such a colour.",
            )
        )
    return found


def _odd_one_out(objects: Sequence[SceneObject]) -> list[_Candidate]:
    if len(objects) < 3:
        return []
    found = []
    for attribute, noun in (("color", "colour"), ("shape", "shape")):
        values = [getattr(obj, attribute) for obj in objects]
        odd = [i for i, value in enumerate(values) if values.count(value) == 1]
        if len(odd) != 1 or len(set(values)) != 2:
            continue
        common = values[(odd[0] + 1) % len(values)]
        found.append(
            _Candidate(
                "odd_one_out",
                odd,
                (f"the object whose {noun} differs from all the others",) * 2,
                (f"Every shape but one has the same {noun}: which one is the exception?",) * 2,
                f"Every other shape is {'a ' if attribute == 'shape' else ''}{common}, "
                f"but {_names(objects, odd)} is not.",
            )
        )
    return found


def reasoning_queries(scene: Scene, rng: np.random.Generator) -> list[ReasoningQuery]:
    """Every applicable query of every family on ``scene``, each worded as a phrase or (with probability
    SENTENCE_PROB) a question, with an explanation with probability EXPLANATION_PROB."""
    objects = scene.objects
    candidates = (
        _roll(objects)
        + _corner_extreme(objects)
        + _corner_count(objects)
        + _corner_relation(objects)
        + _mixing(objects, rng)
        + _ingredients(objects)
        + _look_alike(objects, rng)
        + _color_of(objects)
        + _warmth(objects)
        + _odd_one_out(objects)
    )
    queries = []
    for candidate in candidates:
        number = 0 if len(candidate.targets) == 1 else 1
        is_sentence = bool(rng.random() < SENTENCE_PROB)
        text = (candidate.sentence if is_sentence else candidate.phrase)[number]
        explanation = candidate.explanation if rng.random() < EXPLANATION_PROB else None
        queries.append(ReasoningQuery(text, list(candidate.targets), is_sentence, explanation, candidate.family))
    return queries
