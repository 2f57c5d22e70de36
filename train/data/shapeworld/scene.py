"""Procedural shapeworld scenes: coloured shapes on a cluttered background with exact instance masks.

Rendering is alias-free: every object's full mask is rasterised once (PIL polygon fill on a binary
canvas), the image pixels of the object are painted exactly through that mask (flat colour, or a
two-tone texture of the same base colour), and the visible mask is the full mask minus the full masks
of the objects drawn after it. Image and masks therefore agree pixel for pixel.

Everything is deterministic from an integer seed (``np.random.default_rng(seed)``); ``scene_seed``
maps (split, index, seed) to disjoint integer seeds, so splits never share a scene.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from glee_core.mask_ops import masks_to_boxes
from train.data.shapeworld.vocab import (
    COLORS,
    CROSS_ARM_RATIO,
    DIAMOND_ASPECT,
    SHAPES,
    SIZES,
    STAR_INNER_RATIO,
)

SPLITS = ("train", "val", "test")
TEXTURES = ("stripes", "dots", "checker")
CIRCLE_VERTICES = 64
MIN_INSIDE_FRACTION = 0.7  # an object partly outside the image keeps at least this share inside
MIN_TEXTURE_RADIUS = 14.0  # pixels; smaller objects are always flat (a texture would read as noise)
MAX_ATTEMPTS = 60  # placement attempts per object before the scene settles for fewer objects


@dataclass
class SceneConfig:
    """How scenes are generated. Sizes in pixels; ``repeat_prob`` is the chance that a new object reuses
    the shape and/or colour of an earlier one (so that relational expressions are needed)."""

    height: int = 256
    width: int = 256
    min_objects: int = 1
    max_objects: int = 6
    clutter: bool = True
    texture_prob: float = 0.3
    max_occlusion: float = 0.5
    min_visible_pixels: int = 60
    repeat_prob: float = 0.35

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ValueError(f"SceneConfig: height and width must be >= 32, got {self.height}x{self.width}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"SceneConfig: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 0.0 <= self.max_occlusion < 1.0:
            raise ValueError(f"SceneConfig: max_occlusion must be in [0, 1), got {self.max_occlusion}")


@dataclass
class Placement:
    """Where and how one object is drawn. ``center`` (x, y) and ``radius`` (circumradius) in pixels,
    ``rotation`` in degrees; ``shape``/``color``/``size`` are keys of SHAPES / COLORS / SIZES."""

    shape: str
    color: str
    size: str
    center: tuple[float, float]
    radius: float
    rotation: float
    texture: str | None


@dataclass
class SceneObject(Placement):
    """A drawn object: ``mask`` bool [H, W] of its VISIBLE pixels, ``box`` float32 [4] xyxy of that mask
    (x2 = last column + 1)."""

    mask: np.ndarray
    box: np.ndarray

    @property
    def area(self) -> int:
        """Visible pixels."""
        return int(self.mask.sum())

    @property
    def category_id(self) -> int:
        """COCO category id: index of the shape kind in SHAPES + 1."""
        return list(SHAPES).index(self.shape) + 1


@dataclass
class Scene:
    """An image (uint8 [H, W, 3]) and its objects in drawing order (later ones on top)."""

    image: np.ndarray
    objects: list[SceneObject]
    seed: int
    split: str


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """The generator seed of scene ``index`` of ``split``: ``((seed * 3 + split_id) << 32) | index``,
    so distinct (split, index, seed) triples never share a seed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= index < 2**32:
        raise ValueError(f"index must be in [0, 2**32), got {index}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return ((seed * len(SPLITS) + SPLITS.index(split)) << 32) | index


def shape_polygon(shape: str, center: tuple[float, float], radius: float, rotation: float) -> np.ndarray:
    """Outline of a shape kind as float64 [K, 2] (x, y) vertices in pixels (y grows downwards)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {list(SHAPES)}")
    points = _unit_outline(shape) * radius
    angle = math.radians(rotation)
    rotation_matrix = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return points @ rotation_matrix + np.asarray(center, dtype=np.float64)


def _unit_outline(shape: str) -> np.ndarray:
    """Unrotated outline with circumradius 1, first vertex pointing up."""
    if shape == "circle":
        return _regular(CIRCLE_VERTICES)
    if shape in ("triangle", "pentagon", "hexagon"):
        return _regular(SHAPES[shape].corners)
    if shape == "square":
        return _regular(4, offset=45.0)
    if shape == "diamond":
        return np.array([[0.0, -1.0], [DIAMOND_ASPECT, 0.0], [0.0, 1.0], [-DIAMOND_ASPECT, 0.0]])
    if shape == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, STAR_INNER_RATIO)
        return _regular(10) * radii[:, None]
    if shape == "cross":
        half_arm = CROSS_ARM_RATIO / 2
        span = 1.0 / math.hypot(1.0, half_arm)  # arm tips' outer corners sit on the unit circle
        a, s = half_arm * span, span
        return np.array(
            [[-a, -s], [a, -s], [a, -a], [s, -a], [s, a], [a, a], [a, s], [-a, s], [-a, a], [-s, a], [-s, -a], [-a, -a]]
        )
    raise ValueError(f"no outline for shape {shape!r}")


def _regular(n: int, offset: float = 0.0) -> np.ndarray:
    angles = np.radians(offset + np.arange(n) * 360.0 / n)
    return np.stack([np.sin(angles), -np.cos(angles)], axis=1)


def polygon_area(shape: str, radius: float) -> float:
    """Area in pixels² of the full (unclipped) outline of ``shape`` with circumradius ``radius``."""
    x, y = shape_polygon(shape, (0.0, 0.0), radius, 0.0).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def rasterize(placement: Placement, height: int, width: int) -> np.ndarray:
    """Full (unoccluded) in-image mask of a placement: bool [H, W], alias-free polygon fill."""
    polygon = shape_polygon(placement.shape, placement.center, placement.radius, placement.rotation)
    x0 = max(int(math.floor(polygon[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(polygon[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(polygon[:, 0].max())) + 2, width)
    y1 = min(int(math.ceil(polygon[:, 1].max())) + 2, height)
    mask = np.zeros((height, width), dtype=bool)
    if x1 <= x0 or y1 <= y0:
        return mask
    canvas = Image.new("1", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(canvas).polygon([(float(x) - x0, float(y) - y0) for x, y in polygon], fill=1)
    mask[y0:y1, x0:x1] = np.asarray(canvas, dtype=bool)
    return mask


def texture_shade(color: str) -> tuple[int, int, int]:
    """Second tone of a textured object: 70 % of the base colour, or a lighter tint where that would sink
    into the dark background (luminance below 55)."""
    rgb = np.asarray(COLORS[color], dtype=np.float64)
    darker = rgb * 0.7
    shade = darker if float(darker @ np.array([0.299, 0.587, 0.114])) > 55 else rgb + (255 - rgb) * 0.45
    return tuple(int(round(c)) for c in shade)


def texture_pattern(placement: Placement, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bool pattern (True = shade) of a textured placement at pixel coordinates ``ys``, ``xs`` (same shape),
    fixed to the object's frame so it moves and turns with the object."""
    period = max(4.0, placement.radius * 0.45)
    angle = math.radians(placement.rotation)
    dx, dy = xs + 0.5 - placement.center[0], ys + 0.5 - placement.center[1]
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / period
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / period
    if placement.texture == "stripes":
        return np.floor(u).astype(np.int64) % 2 == 1
    if placement.texture == "checker":
        return (np.floor(u) + np.floor(v)).astype(np.int64) % 2 == 1
    if placement.texture == "dots":
        return (u - np.floor(u) - 0.5) ** 2 + (v - np.floor(v) - 0.5) ** 2 < 0.3**2
    raise ValueError(f"unknown texture {placement.texture!r}; known: {TEXTURES}")


def paint(background: np.ndarray, placements: Sequence[Placement], full_masks: np.ndarray) -> np.ndarray:
    """Paint placements (in order, later on top) through their full masks [N, H, W] onto a copy of the
    uint8 [H, W, 3] background."""
    image = background.copy()
    for placement, mask in zip(placements, full_masks):
        ys, xs = np.nonzero(mask)
        image[ys, xs] = COLORS[placement.color]
        if placement.texture is not None:
            shaded = texture_pattern(placement, ys, xs)
            image[ys[shaded], xs[shaded]] = texture_shade(placement.color)
    return image


def visible_masks(full_masks: np.ndarray) -> np.ndarray:
    """Visible masks [N, H, W]: each full mask minus the union of the full masks drawn after it."""
    visible = full_masks.copy()
    covered = np.zeros(full_masks.shape[1:], dtype=bool)
    for index in range(len(full_masks) - 1, -1, -1):
        visible[index] &= ~covered
        covered |= full_masks[index]
    return visible


def draw_objects(background: np.ndarray, placements: Sequence[Placement]) -> tuple[np.ndarray, list[SceneObject]]:
    """Render placements onto the background → (image uint8 [H, W, 3], SceneObjects with visible masks).
    Objects with no visible pixel are still returned (empty mask, zero box)."""
    height, width = background.shape[:2]
    full = np.zeros((len(placements), height, width), dtype=bool)
    for index, placement in enumerate(placements):
        full[index] = rasterize(placement, height, width)
    return paint(background, placements, full), make_objects(placements, visible_masks(full))


def make_objects(placements: Sequence[Placement], masks: np.ndarray) -> list[SceneObject]:
    """SceneObjects from placements and their visible masks [N, H, W] (boxes computed from the masks)."""
    boxes = masks_to_boxes(masks) if len(placements) else np.zeros((0, 4), np.float32)
    return [
        SceneObject(p.shape, p.color, p.size, p.center, p.radius, p.rotation, p.texture, mask, box)
        for p, mask, box in zip(placements, masks, boxes)
    ]


def object_boxes(objects: Sequence[SceneObject]) -> np.ndarray:
    """The xyxy pixel boxes of ``objects`` as float32 [N, 4] (``[0, 4]`` for none)."""
    return np.array([o.box for o in objects], np.float32).reshape(-1, 4)


def compose_scene(
    placements: Sequence[Placement], height: int = 256, width: int = 256, *, gray: int = 60, split: str = "train"
) -> Scene:
    """A hand-built scene: placements drawn in order on a flat gray background (seed -1: not generated)."""
    background = np.full((height, width, 3), gray, dtype=np.uint8)
    image, objects = draw_objects(background, placements)
    return Scene(image=image, objects=objects, seed=-1, split=split)


def make_background(rng: np.random.Generator, height: int, width: int, clutter: bool) -> np.ndarray:
    """Dark, low-saturation background uint8 [H, W, 3]: flat, or (clutter) a soft gradient with noise and
    thin lines and dots — never anything shaped like an object."""
    base = rng.uniform(30, 90) + rng.uniform(-12, 12, size=3)
    if not clutter:
        return np.broadcast_to(np.clip(base, 0, 255).astype(np.uint8), (height, width, 3)).copy()
    other = rng.uniform(30, 90) + rng.uniform(-12, 12, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * math.cos(angle) / width + ys * math.sin(angle) / height
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = base[None, None] + (other - base)[None, None] * ramp[..., None]
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 7))):
        ends = rng.uniform(0, 1, size=4) * (width, height, width, height)
        draw.line([tuple(ends[:2]), tuple(ends[2:])], fill=_clutter_color(rng, base), width=1)
    for _ in range(int(rng.integers(5, 25))):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.8, 2.0)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_clutter_color(rng, base))
    noise = rng.integers(-6, 7, size=(height, width, 3), dtype=np.int16)
    return np.clip(np.asarray(canvas, dtype=np.int16) + noise, 0, 255).astype(np.uint8)


def _clutter_color(rng: np.random.Generator, base: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(base + rng.uniform(-35, 45) + rng.uniform(-8, 8, size=3), 0, 255))


def sample_placement(
    rng: np.random.Generator, config: SceneConfig, earlier: Sequence[Placement] = ()
) -> Placement:
    """A random placement (kind, colour, size, position, rotation, texture) inside a config's image."""
    shape = str(rng.choice(list(SHAPES)))
    color = str(rng.choice(list(COLORS)))
    if earlier and rng.random() < config.repeat_prob:
        model = earlier[int(rng.integers(len(earlier)))]
        reuse = int(rng.integers(3))  # 0: shape, 1: colour, 2: both
        shape = model.shape if reuse != 1 else shape
        color = model.color if reuse != 0 else color
    size = str(rng.choice(list(SIZES)))
    low, high = SIZES[size]
    radius = rng.uniform(low, high) * min(config.height, config.width) * SHAPES[shape].radius_scale
    limit = SHAPES[shape].max_rotation
    rotation = rng.uniform(-limit, limit) if limit is not None else rng.uniform(0.0, 360.0)
    center = (
        float(rng.uniform(0.4 * radius, config.width - 0.4 * radius)),
        float(rng.uniform(0.4 * radius, config.height - 0.4 * radius)),
    )
    texture = None
    if radius >= MIN_TEXTURE_RADIUS and rng.random() < config.texture_prob:
        texture = str(rng.choice(TEXTURES))
    return Placement(shape, color, size, center, float(radius), float(rotation), texture)


def generate_scene(seed: int, config: SceneConfig = SceneConfig(), split: str = "train") -> Scene:
    """One scene, deterministic in ``seed`` (use ``scene_seed`` for split-disjoint seeds).

    Objects are placed one by one; a candidate is rejected (and resampled) when less than 70 % of it lies
    inside the image, when it has fewer than ``min_visible_pixels``, when it touches or overlaps an earlier
    object of the same colour (they would read as one blob), or when it would leave an earlier object with
    less than ``1 - max_occlusion`` of its own pixels (or fewer than ``min_visible_pixels``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng(seed)
    height, width = config.height, config.width
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    background = make_background(rng, height, width, config.clutter)
    placements: list[Placement] = []
    full: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    for _ in range(count):
        for _ in range(MAX_ATTEMPTS):
            candidate = sample_placement(rng, config, placements)
            mask = rasterize(candidate, height, width)
            inside = int(mask.sum())
            if inside < config.min_visible_pixels:
                continue
            if inside < MIN_INSIDE_FRACTION * polygon_area(candidate.shape, candidate.radius):
                continue
            same_color = [f for f, p in zip(full, placements) if p.color == candidate.color]
            if same_color and (_grow(mask) & np.logical_or.reduce(same_color)).any():
                continue  # touching shapes of one colour would merge into one blob
            remaining = [v & ~mask for v in visible]
            if all(
                r.sum() >= max((1.0 - config.max_occlusion) * f.sum(), config.min_visible_pixels)
                for r, f in zip(remaining, full)
            ):
                placements.append(candidate)
                full.append(mask)
                visible = remaining + [mask]
                break
    full_masks = np.stack(full)
    image = paint(background, placements, full_masks)
    return Scene(image=image, objects=make_objects(placements, np.stack(visible)), seed=seed, split=split)


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` dilated by one pixel (4-neighbourhood)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def generate_scenes(
    split: str, n: int, *, seed: int = 0, start: int = 0, config: SceneConfig = SceneConfig()
) -> Iterator[Scene]:
    """Scenes ``start .. start + n - 1`` of ``split`` for dataset seed ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for index in range(start, start + n):
        yield generate_scene(scene_seed(split, index, seed), config, split)
