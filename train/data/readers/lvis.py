"""LVIS v1 (and v0.5) json → Dataset.

The image path is ``image_root / <last two parts of coco_url>`` (``train2017/000000123456.jpg``, as detectron2
reads v1), or ``image_root / file_name`` when there is no ``coco_url`` (v0.5). ``neg_category_ids`` and
``not_exhaustive_category_ids`` go to ``ImageRecord.extra``; category ``synonyms``, ``frequency`` etc. to
``Dataset.category_info``. LVIS has no ``iscrowd``: every instance has ``iscrowd=False``.
"""
from __future__ import annotations

from pathlib import Path

from train.data.readers._fields import Where
from train.data.readers._instances import read_instances
from train.data.records import Dataset

_EXTRA_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")


def _file_name(where: Where, image: dict) -> str:
    if "coco_url" in image:
        parts = where.field(image, "coco_url", str).rstrip("/").split("/")
        if len(parts) < 2:
            raise where.error(f"'coco_url' must end in <folder>/<file>, got {image['coco_url']!r}")
        return "/".join(parts[-2:])
    if "file_name" in image:
        return where.field(image, "file_name", str)
    raise where.error("missing key 'coco_url' (or 'file_name')")


def _extra(where: Where, image: dict) -> dict:
    return {key: where.items(image, key, int) for key in _EXTRA_KEYS}


def read_lvis(json_path: str | Path, image_root: str | Path, *, check_images: bool = True) -> Dataset:
    """Read an LVIS file; see the module docstring for paths and extras."""
    return read_instances(json_path, image_root, image_file=_file_name, check_images=check_images, image_extra=_extra)
