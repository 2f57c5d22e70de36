"""COCO instances json (``annotations/instances_<split>.json``) → Dataset; image = ``image_root / file_name``."""
from __future__ import annotations

from pathlib import Path

from train.data.readers._fields import Where
from train.data.readers._instances import read_instances
from train.data.records import Dataset


def _file_name(where: Where, image: dict) -> str:
    return where.field(image, "file_name", str)


def read_coco(json_path: str | Path, image_root: str | Path, *, check_images: bool = True) -> Dataset:
    """Read a COCO instances file; boxes become xyxy, segmentations stay as in the file.

    Raises DatasetFormatError for a malformed file and MissingImageError (when ``check_images``) for an
    image that is not under ``image_root``.
    """
    return read_instances(json_path, image_root, image_file=_file_name, check_images=check_images)
