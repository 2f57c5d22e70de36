"""Typed records returned by every dataset reader (numpy only, no torch).

Boxes are float32 ``[4]`` xyxy in absolute pixels (COCO's ``[x, y, w, h]`` converted with ``x2 = x + w``);
segmentations are kept as in the file (polygons or RLE dicts) and rasterised on demand by ``mask``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from train.data.masks import reasonseg_mask, segmentation_mask


@dataclass
class Instance:
    """One annotated object of an image."""

    box: np.ndarray  # float32 [4] xyxy, absolute pixels
    category_id: int
    segmentation: list | dict | None  # polygons, or RLE dict (compressed or uncompressed), as in the file
    iscrowd: bool = False
    ann_id: int | None = None
    area: float | None = None  # the file's ``area`` (mask pixels), when present

    def mask(self, height: int, width: int) -> np.ndarray:
        """bool ``[H, W]`` mask of the segmentation (all False when there is none)."""
        return segmentation_mask(self.segmentation, height, width)


@dataclass
class ImageRecord:
    """One image and its instances."""

    image_id: int
    path: Path
    height: int
    width: int
    instances: list[Instance]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. LVIS neg_category_ids / not_exhaustive_category_ids


@dataclass
class Dataset:
    """A detection dataset (COCO, LVIS): images in file order and categories ``id -> name`` in file order."""

    images: list[ImageRecord]
    categories: dict[int, str]
    category_info: dict[int, dict[str, Any]] = field(default_factory=dict)  # other category keys (supercategory, LVIS frequency, ...)

    def category_names(self) -> list[str]:
        """Names in file order (index = contiguous id)."""
        return list(self.categories.values())

    def contiguous_ids(self) -> dict[int, int]:
        """Dataset category id → contiguous index 0..K-1 (file order)."""
        return {category_id: index for index, category_id in enumerate(self.categories)}

    def category_ids(self) -> list[int]:
        """Contiguous index → dataset category id (file order)."""
        return list(self.categories)


@dataclass
class ReferringRecord:
    """One refer-style reference: an object of an image and the sentences that describe it."""

    ref_id: int
    image: ImageRecord  # instances = [the referred instance]
    sentences: list[str]
    split: str
    category_id: int
    sent_ids: list[int] = field(default_factory=list)


@dataclass
class ReasonSegRecord:
    """One ReasonSeg image: its query texts and the LabelMe polygons ``(label, points float [K, 2] xy)``."""

    image_path: Path
    json_path: Path
    texts: list[str]
    is_sentence: bool
    shapes: list[tuple[str, np.ndarray]] = field(default_factory=list)

    def mask(self, height: int, width: int) -> np.ndarray:
        """uint8 ``[H, W]``: 0 background, 1 target, 255 ignore (LISA's rules, see ``train.data.masks``)."""
        return reasonseg_mask(self.shapes, height, width)


@dataclass
class Explanation:
    """One record of ReasonSeg's ``explanatory/<split>.json``."""

    image: str
    query: str
    outputs: str


@dataclass
class Conversation:
    """One LLaVA conversation; ``<image>`` (when there is an image) starts the first human turn."""

    id: str
    image: Path | None
    turns: list[tuple[str, str]]  # ("human" | "gpt", text)


@dataclass
class VideoTrack:
    """One YouTube-VIS object track; per-frame entries are None where the object is absent."""

    ann_id: int
    category_id: int
    segmentations: list[list | dict | None]
    boxes: list[np.ndarray | None]  # float32 [4] xyxy per frame
    iscrowd: bool = False

    def mask(self, frame: int, height: int, width: int) -> np.ndarray:
        """bool ``[H, W]`` mask in ``frame`` (all False when absent)."""
        return segmentation_mask(self.segmentations[frame], height, width)


@dataclass
class VideoRecord:
    """One YouTube-VIS video: its annotated frames and tracks."""

    video_id: int
    frame_paths: list[Path]
    height: int
    width: int
    tracks: list[VideoTrack]
