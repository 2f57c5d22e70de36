"""Referring expressions for shapeworld scenes, with the referent guaranteed unique.

Expressions are produced from structured forms (``ReferringForm``) by a small grammar:

* attribute:   "the red shape", "the large blue star"
* spatial:     "the star left of the blue square" (left of / right of / above / below)
* between:     "the circle between the red star and the white square"
* ordinal:     "the second circle from the left" (from the left / right / top / bottom)
* superlative: "the largest triangle", "the leftmost object", "the smallest red shape"

``evaluate`` interprets a form against a scene: the objects that satisfy it and the *borderline*
objects a person could reasonably read either way (e.g. a shape only slightly left of the anchor).
An expression is emitted only if exactly one object (its target) satisfies it and none is borderline.
Positions are visible-box centres; "left of" needs a horizontal gap of more than 10 % of the image width
(vertical relations: 10 % of the height); "between" needs the centre within the middle 60 % of the
anchors' segment and at most 0.2 of its length off it (borderline up to 0.5); orders and extremes need
neighbours at least 6 % apart;
"largest"/"smallest" compare full outline areas and need a 1.3x margin. Size words are the world's
size classes (``vocab.SIZES``); anchors of relations must themselves be unique in the scene.

``negative_expressions`` draws expressions of the same grammar that match nothing in the scene (mostly hard
negatives: every attribute present but not together, a relation that does not hold), for calibrating "no such
object" (:mod:`glee_core.rejection`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
import numpy as np

from train.data.shapeworld.scene import Scene, SceneObject, polygon_area
from train.data.shapeworld.vocab import COLORS, SHAPES

KINDS = ("attribute", "spatial", "ordinal", "superlative", "between")
RELATIONS = ("left of", "right of", "above", "below")
DIRECTIONS = ("left", "right", "top", "bottom")
EXTREMES = ("leftmost", "rightmost", "topmost", "bottommost", "largest", "smallest")
ORDINAL_WORDS = ("first", "second", "third")
SPATIAL_MARGIN = 0.10  # fraction of the image width (height for above / below)
ORDER_GAP = 0.06  # fraction of the image width / height between neighbours in an order
SIZE_RATIO = 1.3  # area ratio between the largest (smallest) and the runner-up
BETWEEN_MIN_SPAN = 0.25  # anchors of "between" at least this fraction of the short side apart


@dataclass(frozen=True)
class Description:
    """A noun phrase over attributes; None = unconstrained. Empty description = "object"."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None

    def accepts(self, obj: SceneObject) -> bool:
        return all(
            want is None or want == have
            for want, have in ((self.shape, obj.shape), (self.color, obj.color), (self.size, obj.size))
        )

    @property
    def length(self) -> int:
        return sum(value is not None for value in (self.shape, self.color, self.size))

    def phrase(self) -> str:
        """ "small red circle", "red shape", "object"."""
        noun = self.shape or ("shape" if self.length else "object")
        return " ".join(word for word in (self.size, self.color, noun) if word)


@dataclass(frozen=True)
class ReferringForm:
    """Structured meaning of an expression.

    ``relation`` (spatial / between) is one of RELATIONS or "between", with one or two ``anchors``;
    ``ordinal`` (1-based) with ``direction`` in DIRECTIONS; ``extreme`` in EXTREMES (superlative).
    """

    kind: str
    subject: Description
    relation: str | None = None
    anchors: tuple[Description, ...] = ()
    ordinal: int | None = None
    direction: str | None = None
    extreme: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ReferringForm: kind must be one of {KINDS}, got {self.kind!r}")
        expected_anchors = {"spatial": 1, "between": 2}.get(self.kind, 0)
        if len(self.anchors) != expected_anchors:
            raise ValueError(
                f"ReferringForm: kind {self.kind!r} needs {expected_anchors} anchors, got {len(self.anchors)}"
            )
        if self.kind == "spatial" and self.relation not in RELATIONS:
            raise ValueError(f"ReferringForm: spatial relation must be one of {RELATIONS}, got {self.relation!r}")
        if self.kind == "ordinal" and (
            self.direction not in DIRECTIONS or not 1 <= (self.ordinal or 0) <= len(ORDINAL_WORDS)
        ):
            raise ValueError(f"ReferringForm: bad ordinal {self.ordinal!r} / direction {self.direction!r}")
        if self.kind == "superlative" and self.extreme not in EXTREMES:
            raise ValueError(f"ReferringForm: extreme must be one of {EXTREMES}, got {self.extreme!r}")

    def text(self) -> str:
        """The lower-case English expression."""
        subject = self.subject.phrase()
        if self.kind == "attribute":
            return f"the {subject}"
        if self.kind == "spatial":
            return f"the {subject} {self.relation} the {self.anchors[0].phrase()}"
        if self.kind == "between":
            return f"the {subject} between the {self.anchors[0].phrase()} and the {self.anchors[1].phrase()}"
        if self.kind == "ordinal":
            return f"the {ORDINAL_WORDS[self.ordinal - 1]} {subject} from the {self.direction}"
        return f"the {self.extreme} {subject}"


@dataclass
class ReferringExpression:
    """An expression, the index of its referent in ``scene.objects`` and its kind (one of KINDS)."""

    text: str
    target: int
    kind: str
    form: ReferringForm | None = None


@dataclass(frozen=True)
class Evaluation:
    """Objects satisfying a form and objects that are borderline (a person could read either way)."""

    matches: tuple[int, ...]
    borderline: tuple[int, ...]


class _Layout:
    """Per-scene geometry: box centres (x, y) [N, 2], full outline areas [N], image width / height."""

    def __init__(self, scene: Scene):
        self.objects = scene.objects
        self.height, self.width = scene.image.shape[:2]
        boxes = np.array([obj.box for obj in scene.objects], dtype=np.float64).reshape(-1, 4)
        self.centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        self.areas = np.array([polygon_area(obj.shape, obj.radius) for obj in scene.objects])
        self._selected: dict[Description, list[int]] = {}

    def select(self, description: Description) -> list[int]:
        """Indices of the objects matching ``description`` (memoised: generation asks many times)."""
        if description not in self._selected:
            self._selected[description] = [i for i, obj in enumerate(self.objects) if description.accepts(obj)]
        return self._selected[description]

    def position(self, direction: str) -> tuple[np.ndarray, float]:
        """Sort key (smaller = earlier from ``direction``) for every object, and the minimum clear gap."""
        axis = 0 if direction in ("left", "right") else 1
        sign = 1.0 if direction in ("left", "top") else -1.0
        return sign * self.centers[:, axis], ORDER_GAP * (self.width if axis == 0 else self.height)


_EXTREME_DIRECTION = {"leftmost": "left", "rightmost": "right", "topmost": "top", "bottommost": "bottom"}
_RELATION_DIRECTION = {"left of": "left", "right of": "right", "above": "top", "below": "bottom"}


def evaluate(form: ReferringForm, scene: Scene) -> Evaluation:
    """Interpret ``form`` on ``scene``; a form whose anchors are not unique matches nothing."""
    return _evaluate(form, _Layout(scene))


def matches(form: ReferringForm, scene: Scene) -> list[int]:
    """Indices of the objects of ``scene`` that satisfy ``form``."""
    return list(evaluate(form, scene).matches)


def _evaluate(form: ReferringForm, layout: _Layout) -> Evaluation:
    candidates = layout.select(form.subject)
    if form.kind == "attribute":
        return Evaluation(tuple(candidates), ())
    if form.kind in ("spatial", "between"):
        anchors = [layout.select(anchor) for anchor in form.anchors]
        if any(len(found) != 1 for found in anchors):
            return Evaluation((), ())
        anchor_ids = [found[0] for found in anchors]
        candidates = [index for index in candidates if index not in anchor_ids]
        if form.kind == "spatial":
            return _spatial(layout, candidates, anchor_ids[0], form.relation)
        return _between(layout, candidates, *anchor_ids)
    if form.kind == "ordinal":
        return _ordered(layout, candidates, form.direction, form.ordinal)
    if form.extreme in _EXTREME_DIRECTION:
        return _ordered(layout, candidates, _EXTREME_DIRECTION[form.extreme], 1)
    return _by_size(layout, candidates, largest=form.extreme == "largest")


def _spatial(layout: _Layout, candidates: list[int], anchor: int, relation: str) -> Evaluation:
    key, _ = layout.position(_RELATION_DIRECTION[relation])
    margin = SPATIAL_MARGIN * (layout.width if relation in ("left of", "right of") else layout.height)
    lead = {index: key[anchor] - key[index] for index in candidates}  # > 0: on the named side
    return Evaluation(
        tuple(i for i, d in lead.items() if d > margin),
        tuple(i for i, d in lead.items() if 0 < d <= margin),
    )


def _between(layout: _Layout, candidates: list[int], first: int, second: int) -> Evaluation:
    a, b = layout.centers[first], layout.centers[second]
    span = float(np.linalg.norm(b - a))
    if span < BETWEEN_MIN_SPAN * min(layout.width, layout.height):
        return Evaluation((), tuple(candidates))
    unit = (b - a) / span
    found, borderline = [], []
    for index in candidates:
        offset = layout.centers[index] - a
        along = float(offset @ unit) / span
        across = abs(float(offset[0] * unit[1] - offset[1] * unit[0])) / span
        if 0.2 <= along <= 0.8 and across <= 0.2:
            found.append(index)
        elif 0.05 < along < 0.95 and across <= 0.5:
            borderline.append(index)
    return Evaluation(tuple(found), tuple(borderline))


def _ordered(layout: _Layout, candidates: list[int], direction: str, rank: int) -> Evaluation:
    """The ``rank``-th candidate counted from ``direction``; all borderline unless the first ``rank + 1``
    candidates are separated by clear gaps."""
    if len(candidates) < max(rank, 2):
        return Evaluation((), ())
    key, gap = layout.position(direction)
    order = sorted(candidates, key=lambda index: key[index])
    positions = key[order[: rank + 1]]
    if np.any(np.diff(positions) <= gap):
        return Evaluation((), tuple(order))
    return Evaluation((order[rank - 1],), ())


def _by_size(layout: _Layout, candidates: list[int], largest: bool) -> Evaluation:
    if len(candidates) < 2:
        return Evaluation((), ())
    order = sorted(candidates, key=lambda index: layout.areas[index], reverse=largest)
    best, runner_up = layout.areas[order[0]], layout.areas[order[1]]
    ratio = best / runner_up if largest else runner_up / best
    if ratio < SIZE_RATIO:
        return Evaluation((), tuple(order))
    return Evaluation((order[0],), ())


def attribute_phrase(obj: SceneObject) -> str:
    """ "small red circle": size, colour and shape of an object."""
    return Description(obj.shape, obj.color, obj.size).phrase()


def _descriptions(obj: SceneObject, max_length: int = 3) -> list[Description]:
    """Descriptions of ``obj`` using 0..max_length of its attributes, shortest first (shape before colour
    before size within a length)."""
    values = {"shape": obj.shape, "color": obj.color, "size": obj.size}
    found = []
    for length in range(max_length + 1):
        for keys in itertools.combinations(("shape", "color", "size"), length):
            found.append(Description(**{key: values[key] for key in keys}))
    return found


def _is_unique(form: ReferringForm, layout: _Layout, target: int) -> bool:
    result = _evaluate(form, layout)
    return result.matches == (target,) and not result.borderline


def _unique_names(layout: _Layout) -> dict[int, Description]:
    """The shortest attribute description that singles out each object (objects without one are left out)."""
    names = {}
    for index, obj in enumerate(layout.objects):
        name = next((d for d in _descriptions(obj)[1:] if layout.select(d) == [index]), None)
        if name is not None:
            names[index] = name
    return names


def _forms_by_kind(layout: _Layout, target: int, names: dict[int, Description]) -> dict[str, list[ReferringForm]]:
    """Candidate forms of every kind about ``target`` (not yet checked for uniqueness), shortest text first;
    anchors are other objects named by their ``names``."""
    obj = layout.objects[target]
    subjects = _descriptions(obj, max_length=2)
    anchors = sorted(index for index in names if index != target)
    forms: list[ReferringForm] = [ReferringForm("attribute", d) for d in _descriptions(obj)[1:]]
    for subject in subjects[1:]:
        forms += [ReferringForm("spatial", subject, r, (names[a],)) for a in anchors for r in RELATIONS]
        forms += [
            ReferringForm("between", subject, "between", (names[a], names[b]))
            for a, b in itertools.combinations(anchors, 2)
        ]
    for subject in subjects:
        for direction in DIRECTIONS:
            key, _ = layout.position(direction)
            rank = 1 + sum(key[index] < key[target] for index in layout.select(subject))
            if 2 <= rank <= len(ORDINAL_WORDS):
                forms.append(ReferringForm("ordinal", subject, ordinal=rank, direction=direction))
        forms += [
            ReferringForm("superlative", subject, extreme=extreme)
            for extreme in EXTREMES
            if subject.size is None or extreme in _EXTREME_DIRECTION  # no "the smallest small shape"
        ]
    by_kind: dict[str, list[ReferringForm]] = {kind: [] for kind in KINDS}
    for form in sorted(forms, key=lambda form: len(form.text())):
        by_kind[form.kind].append(form)
    return by_kind


def _shortest_unique(forms: list[ReferringForm], layout: _Layout, target: int, count: int) -> list[ReferringForm]:
    """The first ``count`` of ``forms`` that refer uniquely to ``target``."""
    return list(itertools.islice((form for form in forms if _is_unique(form, layout, target)), count))


def referring_expressions(
    scene: Scene, rng: np.random.Generator, max_per_object: int = 3
) -> list[ReferringExpression]:
    """Up to ``max_per_object`` unique expressions per object of ``scene``, of mixed kinds.

    When attributes alone single an object out, its shortest attribute expression comes first; further
    expressions are drawn from the other kinds in random order, each among the three shortest of its kind.
    """
    if max_per_object < 1:
        raise ValueError(f"max_per_object must be >= 1, got {max_per_object}")
    layout = _Layout(scene)
    names = _unique_names(layout)
    expressions: list[ReferringExpression] = []
    for target in range(len(scene.objects)):
        by_kind = _forms_by_kind(layout, target, names)
        chosen = _shortest_unique(by_kind["attribute"], layout, target, 1)
        shortest = {kind: _shortest_unique(by_kind[kind], layout, target, 3) for kind in KINDS[1:]}
        others = [kind for kind in KINDS[1:] if shortest[kind]]
        rng.shuffle(others)
        for kind in others[: max_per_object - len(chosen)]:
            chosen.append(shortest[kind][int(rng.integers(len(shortest[kind])))])
        expressions += [ReferringExpression(form.text(), target, form.kind, form) for form in chosen]
    return expressions


# ---------------------------------------------------------------- negatives
NEGATIVE_REASONS = ("absent combination", "relation fails", "between fails", "too few", "absent attribute")
"""Why a negative matches nothing: attribute values that are each in the scene but never together ("the green
star" with green things and stars but no green star); a subject present but not on the named side of a unique
anchor; present but not between two unique anchors; an ordinal past the count ("the third circle from the left"
with two circles); an attribute value absent from the scene ("the cross" without crosses: the only easy kind)."""
NEGATIVE_WEIGHTS = {"absent combination": 0.35, "relation fails": 0.3, "between fails": 0.1, "too few": 0.1,
                    "absent attribute": 0.15}


@dataclass
class NegativeExpression:
    """An expression of the referring grammar that no object of its scene satisfies, and why (NEGATIVE_REASONS)."""

    text: str
    kind: str
    form: ReferringForm
    reason: str


def _is_clean_negative(form: ReferringForm, layout: _Layout) -> bool:
    result = _evaluate(form, layout)
    return not result.matches and not result.borderline


def _negative_pools(layout: _Layout) -> dict[str, list[ReferringForm]]:
    """Every clean negative form of each reason (not drawn yet), in a fixed order."""
    objects = layout.objects
    present = {key: sorted({getattr(obj, key) for obj in objects}) for key in ("shape", "color", "size")}
    pools: dict[str, list[ReferringForm]] = {reason: [] for reason in NEGATIVE_REASONS}
    for length in (2, 3):
        for keys in itertools.combinations(("shape", "color", "size"), length):
            for values in itertools.product(*(present[key] for key in keys)):
                subject = Description(**dict(zip(keys, values)))
                if not layout.select(subject):
                    pools["absent combination"].append(ReferringForm("attribute", subject))
    for key, vocabulary in (("shape", SHAPES), ("color", COLORS)):
        pools["absent attribute"] += [ReferringForm("attribute", Description(**{key: value}))
                                      for value in vocabulary if value not in present[key]]
    subjects = list(dict.fromkeys(d for obj in objects for d in _descriptions(obj, max_length=2)[1:]))
    names = _unique_names(layout)
    anchors = sorted(names)
    for subject in subjects:
        found = layout.select(subject)
        for anchor in anchors:
            if any(index != anchor for index in found):
                pools["relation fails"] += [ReferringForm("spatial", subject, relation, (names[anchor],))
                                            for relation in RELATIONS]
        for first, second in itertools.combinations(anchors, 2):
            if any(index not in (first, second) for index in found):
                pools["between fails"].append(
                    ReferringForm("between", subject, "between", (names[first], names[second])))
    for subject in [Description()] + subjects:
        count = len(layout.select(subject))
        pools["too few"] += [ReferringForm("ordinal", subject, ordinal=rank, direction=direction)
                             for rank in range(max(2, count + 1), len(ORDINAL_WORDS) + 1) for direction in DIRECTIONS]
    return {reason: [form for form in forms if _is_clean_negative(form, layout)] for reason, forms in pools.items()}


def negative_expressions(scene: Scene, rng: np.random.Generator, count: int = 3) -> list[NegativeExpression]:
    """Up to ``count`` distinct expressions of the referring grammar that match no object of ``scene`` and that no
    object matches borderline either (``evaluate(form, scene)`` is empty), deterministic from ``rng``.

    Mostly hard negatives: each draw picks a reason with NEGATIVE_WEIGHTS among those that still have forms (only
    "absent attribute" is easy), then a random form of it. Anchors of relations are unique in the scene, as in
    positives, so a negative is never merely ambiguous. Fewer than ``count`` when the scene runs out of forms.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    pools = _negative_pools(_Layout(scene))
    chosen: list[NegativeExpression] = []
    texts: set[str] = set()
    while len(chosen) < count:
        available = [reason for reason in NEGATIVE_REASONS if pools[reason]]
        if not available:
            break
        weights = np.array([NEGATIVE_WEIGHTS[reason] for reason in available])
        reason = available[int(rng.choice(len(available), p=weights / weights.sum()))]
        form = pools[reason].pop(int(rng.integers(len(pools[reason]))))
        if form.text() not in texts:
            texts.add(form.text())
            chosen.append(NegativeExpression(form.text(), form.kind, form, reason))
    return chosen
