"""COCO-family ``images`` / ``annotations`` / ``categories`` parsing shared by the COCO, LVIS and refer readers.

Lenient where detectron2 is (``iscrowd`` defaults to 0, ``segmentation`` and ``area`` may be absent, an empty
segmentation list means "no mask"), strict everywhere else: every type, the bbox length, polygon lengths,
RLE sizes, duplicate ids and dangling ``image_id`` / ``category_id`` references raise DatasetFormatError.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from train.data.readers._fields import Where, load_json, records
from train.data.records import Dataset, ImageRecord, Instance

ImageFile = Callable[[Where, dict], str]
"""Relative path of an ``images[]`` entry's file (under the image root)."""

ImageExtra = Callable[[Where, dict], dict]
"""Format-specific extra fields of an ``images[]`` entry."""


def parse_box(value: Any, where: Where, name: str = "'bbox'") -> np.ndarray:
    """``[x, y, w, h]`` → float32 ``[4]`` xyxy (``x2 = x + w``)."""
    where.check(value, list, name)
    if len(value) != 4:
        raise where.error(f"{name} must have 4 numbers [x, y, w, h], got {len(value)}")
    x, y, w, h = (where.check(v, float, f"{name}[{i}]") for i, v in enumerate(value))
    if w < 0 or h < 0:
        raise where.error(f"{name} has a negative width or height: {value}")
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def parse_rle(value: dict, where: Where, height: int, width: int, name: str) -> dict:
    """Check an RLE dict: ``size == [height, width]``; ``counts`` a str/bytes, or ints covering every pixel."""
    size = where.field(value, "size", list)
    if len(size) != 2 or not all(type(s) is int for s in size):
        raise where.error(f"{name} RLE size must be [height, width] integers, got {size!r}")
    if size != [height, width]:
        raise where.error(f"{name} RLE size {size} does not match the image size [{height}, {width}]")
    if "counts" not in value:
        raise where.error(f"{name} RLE is missing key 'counts'")
    counts = value["counts"]
    if isinstance(counts, list):
        if not all(type(c) is int and c >= 0 for c in counts):
            raise where.error(f"{name} uncompressed RLE counts must be non-negative integers")
        if sum(counts) != height * width:
            raise where.error(f"{name} RLE counts cover {sum(counts)} pixels, the image has {height * width}")
    elif not isinstance(counts, (str, bytes)):
        raise where.error(f"{name} RLE counts must be a string or a list of ints, got {type(counts).__name__}")
    return value


def parse_segmentation(value: Any, where: Where, height: int, width: int, name: str = "'segmentation'") -> Any:
    """Check a segmentation; returns it as in the file, or None for ``null`` / ``[]``.

    Accepted: an RLE dict, a list of RLE dicts, or a list of polygons (flat lists of ≥ 3 (x, y) pairs).
    """
    if value is None or value == []:
        return None
    if isinstance(value, dict):
        return parse_rle(value, where, height, width, name)
    where.check(value, list, name)
    if all(isinstance(part, dict) for part in value):
        for i, part in enumerate(value):
            parse_rle(part, where, height, width, f"{name}[{i}]")
        return value
    for i, polygon in enumerate(value):
        where.check(polygon, list, f"{name}[{i}] (a polygon)")
        for j, v in enumerate(polygon):
            where.check(v, float, f"{name}[{i}][{j}]")
        if len(polygon) % 2 or len(polygon) < 6:
            raise where.error(f"{name}[{i}] polygon must have an even number (>= 6) of coordinates, got {len(polygon)}")
    return value


def parse_categories(where: Where, data: dict) -> tuple[dict[int, str], dict[int, dict]]:
    """``categories[]`` → (id → name, id → the other keys), in file order; ids unique."""
    names: dict[int, str] = {}
    info: dict[int, dict] = {}
    for cat_where, cat in records(where, data, "categories"):
        category_id = cat_where.field(cat, "id", int)
        if category_id in names:
            raise cat_where.error(f"duplicate category id {category_id}")
        names[category_id] = cat_where.field(cat, "name", str)
        info[category_id] = {k: v for k, v in cat.items() if k not in ("id", "name")}
    return names, info


def parse_size(where: Where, record: dict) -> tuple[int, int]:
    """``(height, width)`` of an image or video record, both positive."""
    height, width = where.field(record, "height", int), where.field(record, "width", int)
    if height <= 0 or width <= 0:
        raise where.error(f"image size must be positive, got height {height}, width {width}")
    return height, width


def parse_annotation_ids(where: Where, ann: dict, seen: set[int], parents: dict, parent_key: str,
                         categories: dict[int, str]) -> tuple[int, int, int]:
    """``(id, parent id, category_id)`` of an annotation: its id new (added to ``seen``), its ``parent_key``
    (``image_id`` / ``video_id``) one of ``parents`` and its category one of ``categories``."""
    ann_id = where.field(ann, "id", int)
    if ann_id in seen:
        raise where.error(f"duplicate annotation id {ann_id}")
    seen.add(ann_id)
    parent_id = where.field(ann, parent_key, int)
    if parent_id not in parents:
        raise where.error(f"{parent_key} {parent_id} is not in '{parent_key.split('_')[0]}s'")
    category_id = where.field(ann, "category_id", int)
    if category_id not in categories:
        raise where.error(f"category_id {category_id} is not in 'categories'")
    return ann_id, parent_id, category_id


def read_instances(
    json_path: str | Path,
    image_root: str | Path,
    *,
    image_file: ImageFile,
    check_images: bool,
    image_extra: ImageExtra | None = None,
) -> Dataset:
    """Read a COCO-family instances file into a Dataset (images and categories in file order)."""
    path = Path(json_path)
    image_root = Path(image_root)
    top = Where(path, "top level")
    data = top.check(load_json(path), dict, "the file content")
    categories, category_info = parse_categories(top, data)

    images: dict[int, ImageRecord] = {}
    for img_where, img in records(top, data, "images"):
        image_id = img_where.field(img, "id", int)
        if image_id in images:
            raise img_where.error(f"duplicate image id {image_id}")
        height, width = parse_size(img_where, img)
        image_path = image_root / image_file(img_where, img)
        if check_images:
            img_where.require_image(image_path)
        extra = image_extra(img_where, img) if image_extra is not None else {}
        images[image_id] = ImageRecord(image_id, image_path, height, width, [], extra)

    ann_ids: set[int] = set()
    for ann_where, ann in records(top, data, "annotations"):
        ann_id, image_id, category_id = parse_annotation_ids(ann_where, ann, ann_ids, images, "image_id", categories)
        image = images[image_id]
        image.instances.append(Instance(
            box=parse_box(ann_where.field(ann, "bbox", list), ann_where),
            category_id=category_id,
            segmentation=parse_segmentation(ann.get("segmentation"), ann_where, image.height, image.width),
            iscrowd=ann_where.field(ann, "iscrowd", bool, False),
            ann_id=ann_id,
            area=ann_where.field(ann, "area", float, None),
        ))
    return Dataset(list(images.values()), categories, category_info)
