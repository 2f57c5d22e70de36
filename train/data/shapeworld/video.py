"""shapeworld videos: objects that move, turn, occlude each other and enter or leave the frame.

Every object is a track with a fixed appearance (tracks have distinct colours), drawn by
``scene.draw_objects`` on a background shared by all frames, and a motion: constant velocity with a
slow spin. "stay" tracks bounce off the image borders; "enter" tracks start fully outside and move in
through a border; "leave" tracks start inside and move out. With probability ``crossing_prob`` one
"stay" track is re-aimed to meet another track mid-clip, so that one occludes the other.

Track ids are indices into ``Video.tracks``; a track is listed in a frame only if at least
``min_visible_pixels`` of it are visible (not yet entered, gone, or hidden: absent); a track below that
is not drawn in that frame either, so every drawn pixel belongs to a listed object.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from train.data.shapeworld.scene import (
    SPLITS,
    Placement,
    SceneConfig,
    SceneObject,
    draw_objects,
    make_background,
    sample_placement,
    scene_seed,
)
from train.data.shapeworld.vocab import COLORS, SHAPES

MODES = ("stay", "enter", "leave")


@dataclass
class VideoConfig:
    """How videos are generated. ``speed`` is a (min, max) range in fractions of the short side per frame,
    ``spin`` the largest rotation in degrees per frame."""

    num_frames: int = 12
    height: int = 256
    width: int = 256
    min_objects: int = 2
    max_objects: int = 5
    enter_prob: float = 0.25
    leave_prob: float = 0.25
    crossing_prob: float = 0.8
    speed: tuple[float, float] = (0.01, 0.035)
    spin: float = 4.0
    clutter: bool = True
    texture_prob: float = 0.3
    min_visible_pixels: int = 20

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"VideoConfig: num_frames must be >= 2, got {self.num_frames}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"VideoConfig: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if self.max_objects > len(COLORS):
            raise ValueError(f"VideoConfig: max_objects must be <= {len(COLORS)} (tracks have distinct colours)")
        if self.enter_prob + self.leave_prob > 1.0:
            total = self.enter_prob + self.leave_prob
            raise ValueError(f"VideoConfig: enter_prob + leave_prob must be <= 1, got {total}")


@dataclass
class VideoFrame:
    """One frame: image uint8 [H, W, 3], the visible objects in drawing order and their track ids."""

    image: np.ndarray
    objects: list[SceneObject]
    track_ids: list[int]


@dataclass
class Video:
    """Frames of a clip; ``tracks[i]`` is track i's appearance (and its pose in frame 0, visible or not)."""

    frames: list[VideoFrame]
    seed: int
    split: str
    tracks: list[Placement] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)  # per track: one of MODES


@dataclass
class _Motion:
    """Unfolded start position (x, y), velocity (pixels / frame), the box each axis is folded into
    (bounces), start rotation and spin (degrees, degrees / frame)."""

    start: np.ndarray
    velocity: np.ndarray
    low: np.ndarray
    high: np.ndarray
    rotation: float
    spin: float

    def center(self, t: float) -> tuple[float, float]:
        unfolded = self.start + self.velocity * t
        x, y = (_fold(float(p), float(lo), float(hi)) for p, lo, hi in zip(unfolded, self.low, self.high))
        return x, y


def _fold(value: float, low: float, high: float) -> float:
    """Reflect ``value`` into [low, high] (a bouncing coordinate); an infinite box leaves it unchanged."""
    if not np.isfinite(high - low):
        return value
    span = high - low
    offset = (value - low) % (2 * span)
    return low + (offset if offset <= span else 2 * span - offset)


def _pose(track: Placement, motion: _Motion, t: float) -> Placement:
    """The track's placement at frame ``t`` (rotation kept within the kind's ``max_rotation``)."""
    limit = SHAPES[track.shape].max_rotation
    angle = motion.rotation + motion.spin * t
    rotation = angle % 360.0 if limit is None else _fold(angle, -limit, limit)
    return replace(track, center=motion.center(t), rotation=rotation)


def _motion(rng: np.random.Generator, placement: Placement, mode: str, config: VideoConfig) -> _Motion:
    """Random motion of a track in ``mode``; tracks entering or leaving move at the faster half of ``speed``."""
    size = np.array([config.width, config.height], dtype=np.float64)
    radius = placement.radius
    spin = rng.uniform(-config.spin, config.spin)
    if mode == "stay":
        speed = rng.uniform(*config.speed) * min(config.height, config.width)
        angle = rng.uniform(0, 2 * np.pi)
        low, high = np.full(2, 0.8 * radius), size - 0.8 * radius
        start = np.array(placement.center)
        return _Motion(start, speed * np.array([np.cos(angle), np.sin(angle)]), low, high, placement.rotation, spin)
    axis = int(rng.integers(2))  # 0: through the left / right border, 1: top / bottom
    inward = 1.0 if rng.random() < 0.5 else -1.0  # +1: moving towards larger coordinates
    speed = rng.uniform(sum(config.speed) / 2, config.speed[1]) * min(config.height, config.width)  # the faster half
    slant = rng.uniform(-0.3, 0.3)  # radians off the border's normal
    velocity = np.zeros(2)
    velocity[axis], velocity[1 - axis] = inward * speed * np.cos(slant), speed * np.sin(slant)
    start = np.array(placement.center)
    last = config.num_frames - 1
    if mode == "enter":  # fully outside until frame `arrival`, then crossing the border
        arrival = rng.uniform(1, max(1.0, last / 2))
        border = -radius if inward > 0 else size[axis] + radius
        start[axis] = border - velocity[axis] * arrival
    else:  # "leave": fully outside from frame `exit` on
        exit_frame = rng.uniform(last / 2, last)
        border = size[axis] + radius if inward > 0 else -radius
        start[axis] = border - velocity[axis] * exit_frame
    low = np.full(2, -np.inf)
    high = np.full(2, np.inf)
    low[1 - axis], high[1 - axis] = 0.8 * radius, size[1 - axis] - 0.8 * radius
    return _Motion(start, velocity, low, high, placement.rotation, spin)


def _cross_paths(rng: np.random.Generator, motions: list[_Motion], modes: list[str], config: VideoConfig) -> None:
    """Re-aim one "stay" track so that its centre meets another track's centre in the middle of the clip."""
    staying = [i for i, mode in enumerate(modes) if mode == "stay"]
    if len(motions) < 2 or not staying:
        return
    mover = int(rng.choice(staying))
    other = int(rng.choice([i for i in range(len(motions)) if i != mover]))
    meeting = rng.uniform(config.num_frames / 3, 2 * config.num_frames / 3)
    target = np.clip(np.array(motions[other].center(meeting)), motions[mover].low, motions[mover].high)
    motions[mover].start = target - motions[mover].velocity * meeting


def _render_frame(background: np.ndarray, placements: list[Placement], min_visible_pixels: int) -> VideoFrame:
    """Draw one frame; tracks with fewer than ``min_visible_pixels`` visible are left out of the drawing
    too (a sliver of an unlisted object would be an unlabelled object), so every drawn object is listed."""
    image, objects = draw_objects(background, placements)
    listed = [i for i, obj in enumerate(objects) if obj.area >= min_visible_pixels]
    if len(listed) < len(objects) and any(obj.area for obj in objects if obj.area < min_visible_pixels):
        image, objects = draw_objects(background, [placements[i] for i in listed])
        return VideoFrame(image, objects, listed)
    return VideoFrame(image, [objects[i] for i in listed], listed)


def generate_video(seed: int, config: VideoConfig = VideoConfig(), split: str = "train") -> Video:
    """One clip, deterministic in ``seed`` (use ``scene_seed`` for split-disjoint seeds)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng(seed)
    scene_config = SceneConfig(height=config.height, width=config.width, texture_prob=config.texture_prob)
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    background = make_background(rng, config.height, config.width, config.clutter)
    tracks: list[Placement] = []
    while len(tracks) < count:  # distinct colours: crossing shapes of one colour would merge into one blob
        candidate = sample_placement(rng, scene_config, tracks)
        if all(candidate.color != track.color for track in tracks):
            tracks.append(candidate)
    modes = [
        str(rng.choice(MODES, p=[1.0 - config.enter_prob - config.leave_prob, config.enter_prob, config.leave_prob]))
        for _ in tracks
    ]
    motions = [_motion(rng, track, mode, config) for track, mode in zip(tracks, modes)]
    if rng.random() < config.crossing_prob:
        _cross_paths(rng, motions, modes, config)
    tracks = [_pose(track, motion, 0) for track, motion in zip(tracks, motions)]
    frames = []
    for t in range(config.num_frames):
        placements = [_pose(track, motion, t) for track, motion in zip(tracks, motions)]
        frames.append(_render_frame(background, placements, config.min_visible_pixels))
    return Video(frames=frames, seed=seed, split=split, tracks=tracks, modes=modes)


def generate_videos(
    split: str, n: int, *, seed: int = 0, start: int = 0, config: VideoConfig = VideoConfig()
) -> Iterator[Video]:
    """Videos ``start .. start + n - 1`` of ``split`` for dataset seed ``seed`` (seeds as for scenes)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for index in range(start, start + n):
        yield generate_video(scene_seed(split, index, seed), config, split)
