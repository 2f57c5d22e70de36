"""The vocabulary of shapeworld: shape kinds, colours, colour mixtures and size classes.

Corner counting (used by the reasoning queries): a corner is a vertex of the outline, convex or
concave. A circle has 0; a star has 10 (5 outer points + 5 inner notches); a cross (plus sign) has 12
(4 × 2 outer corners + 4 inner corners). Because a person might count a star's points (5) or a cross's
arm ends (4) instead, ``ShapeKind.corner_alternatives`` lists those readings; a reasoning query about
corner counts is kept only if every reading gives the same answer.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeKind:
    """One shape kind.

    ``radius_scale`` multiplies the size class's nominal radius into the circumradius so that kinds of
    the same size class look about equally big (a triangle fills less of its circumcircle than a circle).
    ``max_rotation`` bounds |rotation| in degrees (None: any rotation), so that a square never turns into
    a diamond-looking square standing on its corner.
    """

    name: str
    corners: int
    can_roll: bool
    radius_scale: float = 1.0
    max_rotation: float | None = None
    corner_alternatives: tuple[int, ...] = ()
    looks_like: tuple[str, ...] = ()  # everyday things with this shape (reasoning queries)


SHAPES: dict[str, ShapeKind] = {
    kind.name: kind
    for kind in (
        ShapeKind("circle", 0, True, 1.0, looks_like=("a coin", "a wheel")),
        ShapeKind("square", 4, False, 1.1, max_rotation=20.0, looks_like=("a chessboard field", "a floor tile")),
        ShapeKind("triangle", 3, False, 1.25, looks_like=("a warning road sign", "a slice of cake seen from above")),
        ShapeKind("pentagon", 5, False, 1.08, looks_like=("a baseball home plate", "the outline of a simple house",)),
        ShapeKind("hexagon", 6, False, 1.05, looks_like=("a honeycomb cell", "a nut for a bolt")),
        ShapeKind("star", 10, False, 1.25, corner_alternatives=(5,), looks_like=("a sea star", "a sheriff's badge")),
        ShapeKind(
            "diamond", 4, False, 1.2, max_rotation=25.0, looks_like=("a kite", "the diamond suit on a playing card")
        ),
        ShapeKind("cross", 12, False, 1.12, corner_alternatives=(4,), looks_like=("a plus sign", "a first-aid sign")),
    )
}

DIAMOND_ASPECT = 0.55  # width / height of the diamond (a narrow rhombus, never a rotated square)
STAR_INNER_RATIO = 0.45  # inner / outer radius of the star
CROSS_ARM_RATIO = 0.36  # arm width / full span of the cross

CATEGORY_NAMES: list[str] = list(SHAPES)  # detection categories; COCO category id = index + 1

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 170, 60),
    "blue": (35, 75, 220),
    "purple": (140, 50, 190),
    "pink": (250, 140, 200),
    "brown": (125, 75, 35),
    "cyan": (40, 215, 225),
    "white": (245, 245, 245),
}

MIXTURES: dict[frozenset[str], str] = {
    frozenset(pair): result
    for pair, result in (
        (("blue", "yellow"), "green"),
        (("red", "yellow"), "orange"),
        (("red", "blue"), "purple"),
        (("red", "white"), "pink"),
        (("blue", "green"), "cyan"),
    )
}

WARM_COLORS = frozenset({"red", "orange", "yellow"})
COOL_COLORS = frozenset({"blue", "green", "cyan"})  # purple, pink, brown, white count as neither

COLOR_OF: dict[str, str] = {  # everyday things and their colour (reasoning queries)
    "the sky on a clear day": "blue",
    "fresh grass": "green",
    "a ripe banana": "yellow",
    "fresh snow": "white",
    "a fire truck": "red",
    "chocolate": "brown",
    "a flamingo": "pink",
    "a pumpkin": "orange",
}

SIZES: dict[str, tuple[float, float]] = {  # nominal radius range as a fraction of the image's short side
    "small": (0.05, 0.075),  # adjacent classes differ by >= 1.2x in radius, so size words are clear-cut
    "medium": (0.09, 0.12),
    "large": (0.145, 0.19),
}


def plural(noun: str) -> str:
    """The plural of a shape noun or phrase ending in one: ``circle`` -> ``circles``, ``cross`` -> ``crosses``."""
    return noun + ("es" if noun.endswith("s") else "s")
