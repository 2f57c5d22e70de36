"""Training samples for GLEE and the sources that produce them.

A :class:`TrainSample` is one image with its prompt and the objects the prompt asks for. Three tasks:

* ``detection`` — ``names`` are K category names; ``labels`` index them.
* ``referring`` — ``names`` is the one expression; every target has label 0 (none for a negative expression).
* ``visual`` — ``names`` is ``["object"]``; ``prompt`` is a box (xyxy) or point (xy) in image pixels on the
  one target.

Sources are deterministic functions of an index (``source.sample(i)``), so a run is reproducible and resumes at
the same data. :class:`ShapeworldSource` draws fresh scenes of the synthetic world; :class:`CocoSource` reads a
COCO-format dataset (the fine-tuning path).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glee_core.structures import Expression
from train.data.records import Dataset

TASKS = ("detection", "referring", "visual")
PROMPT_TYPES = ("box", "point")


@dataclass
class TrainSample:
    """One image and its prompt; boxes xyxy in image pixels, masks bool [n, H, W] (None: boxes only)."""

    image: np.ndarray
    task: str
    names: list[str]
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray | None
    prompt_type: str | None = None
    prompt: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 [H, W, 3], got {self.image.dtype} {self.image.shape}")
        n = len(self.labels)
        if self.boxes.shape != (n, 4) or (self.masks is not None and self.masks.shape != (n, *self.image.shape[:2])):
            raise ValueError(f"{n} labels need boxes [{n}, 4] and masks [{n}, H, W], got {self.boxes.shape} and "
                             f"{None if self.masks is None else self.masks.shape}")
        if self.task == "visual" and self.prompt_type not in PROMPT_TYPES:
            raise ValueError(f"visual samples need prompt_type in {PROMPT_TYPES}, got {self.prompt_type!r}")

    @property
    def group(self) -> tuple[str, str | None]:
        """Samples of one group share a forward pass (same prompt mode)."""
        return self.task, self.prompt_type


def _normalise_weights(weights: dict[str, float]) -> tuple[list[str], np.ndarray]:
    unknown = sorted(set(weights) - set(TASKS))
    if unknown or not weights:
        raise ValueError(f"task weights must name some of {TASKS}, got {sorted(weights)}")
    names = [t for t in TASKS if weights.get(t, 0) > 0]
    if not names:
        raise ValueError(f"at least one task weight must be positive, got {weights}")
    p = np.array([weights[t] for t in names], dtype=np.float64)
    return names, p / p.sum()


def pick_categories(rng: np.random.Generator, num_categories: int, present: np.ndarray, full_prob: float
                    ) -> np.ndarray:
    """Category indices to prompt with: all of them with probability ``full_prob``, else a random subset that keeps
    at least one present category; in random order either way (so any prompt list works at test time)."""
    if rng.random() < full_prob or num_categories == 1:
        return rng.permutation(num_categories)
    keep = rng.random(num_categories) < 0.5
    if len(present):
        keep[rng.choice(present)] = True
    elif not keep.any():
        keep[rng.integers(num_categories)] = True
    return rng.permutation(np.flatnonzero(keep))


def restrict_categories(samples: list[TrainSample], chosen: np.ndarray) -> list[TrainSample]:
    """Detection samples (all prompting the same K names) re-prompted with ``names[chosen]`` in that order;
    objects of categories left out are dropped."""
    names = samples[0].names
    position = np.full(len(names), -1, dtype=np.int64)
    position[chosen] = np.arange(len(chosen))
    out = []
    for s in samples:
        keep = position[s.labels] >= 0
        out.append(TrainSample(image=s.image, task="detection", names=[names[c] for c in chosen],
                               labels=position[s.labels[keep]], boxes=s.boxes[keep],
                               masks=None if s.masks is None else s.masks[keep]))
    return out


def shuffle_categories(rng: np.random.Generator, samples: list[TrainSample], full_prob: float) -> list[TrainSample]:
    """:func:`restrict_categories` with a random list from :func:`pick_categories` (objects of the batch count as
    present)."""
    present = np.unique(np.concatenate([s.labels for s in samples]))
    return restrict_categories(samples, pick_categories(rng, len(samples[0].names), present, full_prob))


def detection_sample(image: np.ndarray, category_names: list[str], labels: np.ndarray, boxes: np.ndarray,
                     masks: np.ndarray | None) -> TrainSample:
    """A detection sample prompting every category name."""
    return TrainSample(image=image, task="detection", names=list(category_names), labels=labels.astype(np.int64),
                       boxes=boxes.astype(np.float32), masks=masks)


def visual_sample(rng: np.random.Generator, image: np.ndarray, box: np.ndarray, mask: np.ndarray,
                  prompt_types: tuple[str, ...]) -> TrainSample:
    """A visual-prompt sample on one object: its box, or a random pixel of its mask."""
    kind = prompt_types[rng.integers(len(prompt_types))]
    if kind == "box":
        prompt = box.astype(np.float32)
    else:
        ys, xs = np.nonzero(mask)
        i = rng.integers(len(xs))
        prompt = np.array([xs[i] + 0.5, ys[i] + 0.5], dtype=np.float32)
    return TrainSample(image=image, task="visual", names=["object"], labels=np.zeros(1, dtype=np.int64),
                       boxes=box[None].astype(np.float32), masks=mask[None], prompt_type=kind, prompt=prompt)


@dataclass
class ShapeworldSource:
    """Fresh shapeworld scenes, one per index, turned into samples of the weighted tasks.

    Scenes come from ``split`` under ``seed``; index i always gives the same sample. A ``negative_referring`` share
    of the referring samples get an expression that matches no object of the scene, and no target. A
    ``video_frames`` share of the detection samples is one frame of a shapeworld video of the same split instead
    of a scene: objects entering or leaving through a border or mostly hidden by another, down to the videos'
    ``min_visible_pixels``, which scenes never show (they keep 70 % of an object inside and half of it visible).
    """

    split: str = "train"
    seed: int = 0
    task_weights: dict[str, float] = field(default_factory=lambda: {"detection": 2.0, "referring": 1.0, "visual": 1.0})
    prompt_types: tuple[str, ...] = PROMPT_TYPES
    negative_referring: float = 0.0
    video_frames: float = 0.0

    def __post_init__(self) -> None:
        self._tasks, self._p = _normalise_weights(self.task_weights)
        for name in ("negative_referring", "video_frames"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share in [0, 1], got {getattr(self, name)}")

    @property
    def category_names(self) -> list[str]:
        from train.data.shapeworld import CATEGORY_NAMES

        return list(CATEGORY_NAMES)

    def sample(self, index: int) -> TrainSample:
        from train.data.shapeworld import generate_scene, negative_expressions, referring_expressions, scene_seed

        scene_id = scene_seed(self.split, index, self.seed)
        scene = generate_scene(scene_id, split=self.split)
        rng = np.random.default_rng([scene_id, 1])
        boxes = np.stack([o.box for o in scene.objects]).astype(np.float32)
        masks = np.stack([o.mask for o in scene.objects])
        task = self._tasks[rng.choice(len(self._tasks), p=self._p)]
        if task == "referring" and self.negative_referring and rng.random() < self.negative_referring:
            negatives = negative_expressions(scene, rng, count=1)
            if negatives:
                return TrainSample(image=scene.image, task="referring", names=[Expression(negatives[0].text).normalized],
                                   labels=np.zeros(0, dtype=np.int64), boxes=np.zeros((0, 4), dtype=np.float32),
                                   masks=np.zeros((0, *scene.image.shape[:2]), dtype=bool))
        if task == "referring":
            expressions = referring_expressions(scene, rng)
            if expressions:
                ref = expressions[rng.integers(len(expressions))]
                return TrainSample(image=scene.image, task="referring", names=[Expression(ref.text).normalized],
                                   labels=np.zeros(1, dtype=np.int64), boxes=boxes[[ref.target]],
                                   masks=masks[[ref.target]])
            task = "detection"
        if task == "visual":
            i = rng.integers(len(scene.objects))
            return visual_sample(rng, scene.image, boxes[i], masks[i], self.prompt_types)
        if self.video_frames and rng.random() < self.video_frames:
            return self._video_frame_sample(scene_id, rng)
        return self._detection_sample(scene.image, scene.objects)

    def _detection_sample(self, image: np.ndarray, objects: list) -> TrainSample:
        from train.data.shapeworld.scene import object_boxes

        index_of = {name: i for i, name in enumerate(self.category_names)}
        categories = np.array([index_of[o.shape] for o in objects], dtype=np.int64)
        masks = np.array([o.mask for o in objects], dtype=bool).reshape(-1, *image.shape[:2])
        return detection_sample(image, self.category_names, categories, object_boxes(objects), masks)

    def _video_frame_sample(self, video_seed: int, rng: np.random.Generator) -> TrainSample:
        """Detection on one random frame of a shapeworld video (it may show no object: nothing to find)."""
        from train.data.shapeworld.video import generate_video

        video = generate_video(video_seed, split=self.split)
        frame = video.frames[rng.integers(len(video.frames))]
        return self._detection_sample(frame.image, frame.objects)


@dataclass
class CocoSource:
    """Detection samples of a COCO-format dataset (``train.data.readers.read_coco``), with horizontal flips.

    Index i reads image ``i % len(images)``; crowd annotations are left out.
    """

    dataset: Dataset
    seed: int = 0
    flip: bool = True

    def __post_init__(self) -> None:
        if not self.dataset.images:
            raise ValueError("the dataset has no images")
        self._ids = list(self.dataset.categories)

    @property
    def category_names(self) -> list[str]:
        return [self.dataset.categories[i] for i in self._ids]

    def sample(self, index: int) -> TrainSample:
        from glee_core.image_io import load_image

        record = self.dataset.images[index % len(self.dataset.images)]
        rng = np.random.default_rng([self.seed, index])
        image = load_image(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise ValueError(f"{record.path} is {image.shape[1]}x{image.shape[0]} but the annotation says "
                             f"{record.width}x{record.height} (image_id {record.image_id})")
        instances = [inst for inst in record.instances if not inst.iscrowd]
        index_of = {cid: i for i, cid in enumerate(self._ids)}
        categories = np.array([index_of[inst.category_id] for inst in instances], dtype=np.int64)
        boxes = np.array([inst.box for inst in instances], dtype=np.float32).reshape(-1, 4)
        has_masks = all(inst.segmentation is not None for inst in instances)  # an image without objects: [0, H, W]
        masks = (np.stack([inst.mask(record.height, record.width) for inst in instances]
                          or [np.zeros((record.height, record.width), dtype=bool)])[: len(instances)]
                 if has_masks else None)
        if self.flip and rng.random() < 0.5:
            image = np.ascontiguousarray(image[:, ::-1])
            boxes = np.stack([record.width - boxes[:, 2], boxes[:, 1], record.width - boxes[:, 0], boxes[:, 3]], 1)
            masks = None if masks is None else masks[:, :, ::-1].copy()  # (ascontiguousarray keeps [0, H, W] flipped)
        return detection_sample(image, self.category_names, categories, boxes, masks)
