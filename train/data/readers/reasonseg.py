"""ReasonSeg (LISA) split folders and the explanatory json → ReasonSegRecords / Explanations.

A split folder holds ``<stem>.<jpg|png|jpeg>`` + ``<stem>.json`` pairs. The json is read as UTF-8, then as
cp1252 (some official files are not UTF-8). Only LISA's keys are read: ``text`` (list of str), ``is_sentence``
(bool) and ``shapes`` (``{label, points: [[x, y], ...]}``); other LabelMe keys are ignored.
"""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from train.data.errors import DatasetFormatError, MissingImageError
from train.data.readers._fields import Where, load_json, records
from train.data.records import Explanation, ReasonSegRecord

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
ENCODINGS = ("utf-8", "cp1252")


def _image_for(json_path: Path, where: Where) -> Path:
    """The image beside ``json_path``: its stem with an image suffix in any case (``a.jpg``, ``a.JPG``)."""
    found = {p.suffix.lower(): p for p in sorted(json_path.parent.glob(f"{glob.escape(json_path.stem)}.*"))
             if p.stem == json_path.stem and p.is_file()}
    for suffix in IMAGE_SUFFIXES:
        if suffix in found:
            return found[suffix]
    candidates = [json_path.with_suffix(suffix) for suffix in IMAGE_SUFFIXES]
    raise MissingImageError(where.record, candidates[0], json_path, also_tried=tuple(candidates[1:]))


def _shape(where: Where, shape: dict) -> tuple[str, np.ndarray]:
    label = where.field(shape, "label", str)
    points = where.items(shape, "points", list)
    if not points:
        raise where.error("'points' is empty")
    for i, point in enumerate(points):
        if len(point) != 2:
            raise where.error(f"'points'[{i}] must be [x, y], got {len(point)} numbers")
        for v in point:
            where.check(v, float, f"'points'[{i}]")
    return label, np.asarray(points, dtype=np.float64)


def read_reasonseg_json(json_path: str | Path) -> ReasonSegRecord:
    """One ``<stem>.json`` and the image beside it."""
    json_path = Path(json_path)
    where = Where(json_path, f"image {json_path.stem}")
    data = where.check(load_json(json_path, ENCODINGS), dict, "the file content")
    texts = where.items(data, "text", str)
    if not texts:
        raise where.error("'text' is empty")
    is_sentence = where.field(data, "is_sentence", bool)
    shapes = [_shape(shape_where, shape) for shape_where, shape in records(where, data, "shapes", id_key="label")]
    return ReasonSegRecord(_image_for(json_path, where), json_path, texts, is_sentence, shapes)


def read_reasonseg(split_dir: str | Path) -> list[ReasonSegRecord]:
    """All records of a split folder, sorted by stem; an image without its json is a DatasetFormatError."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"ReasonSeg split folder not found: {split_dir}")
    json_paths = sorted(split_dir.glob("*.json"))
    stems = {path.stem for path in json_paths}
    for image in sorted(p for p in split_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if image.stem not in stems:
            raise DatasetFormatError(image, f"image {image.stem}", f"no annotation {image.stem}.json beside it")
    return [read_reasonseg_json(path) for path in json_paths]


def read_explanatory(json_path: str | Path) -> list[Explanation]:
    """``explanatory/<split>.json``: a list of ``{image, query, outputs}``."""
    json_path = Path(json_path)
    top = Where(json_path, "top level")
    data = top.check(load_json(json_path, ENCODINGS), list, "the file content")
    out = []
    for index, item in enumerate(data):
        where = top.at(f"[{index}]")
        where.check(item, dict, "record")
        out.append(Explanation(*(where.field(item, key, str) for key in ("image", "query", "outputs"))))
    return out
