"""Reading and checking detection results in the COCO / LVIS results format (DATA_FORMATS.md §1, §2).

A results file is a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` dicts in absolute
pixels; mask results add ``"segmentation"``: a compressed RLE (``counts`` a string) whose ``size`` is the image's
``[height, width]``. pycocotools and lvis-api answer a malformed record with a bare assert or KeyError deep in the
evaluation, so :func:`check_results` says first which record is wrong and why.

The per-field checks (:func:`id_problem`, :func:`score_problem`, :func:`bbox_problem`, :func:`rle_problem`)
return a sentence describing the problem, or None, so other results formats (YouTube-VIS tracks) reuse them.
"""
from __future__ import annotations

import json
import math
from collections.abc import Collection
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from glee_core.json_file import read_json

RESULT_FIELDS = "image_id, category_id, bbox [x, y, w, h], score (and segmentation for masks)"


class PredictionError(ValueError):
    """Predictions the evaluation cannot score; the message names the file or record and what is wrong."""


def _is_integer(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _shorten(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def id_problem(record: dict, key: str, known: Collection[int], what: str) -> str | None:
    """``record[key]`` must be an integer id among ``known`` (``what`` names them, e.g. "ground-truth images")."""
    if key not in record:
        return f"missing {key!r}"
    value = record[key]
    if not _is_integer(value):
        return f"{key!r} must be an integer id, got {_shorten(value)}"
    if value not in known:
        hint = f" (those are {sorted(known)})" if len(known) <= 10 else f" ({len(known)} ids)"
        return f"{key} {value} is not one of the {what}{hint}"
    return None


def score_problem(value: Any) -> str | None:
    """A score must be a finite number."""
    return None if _is_number(value) else f"'score' must be a finite number, got {_shorten(value)}"


def bbox_problem(value: Any) -> str | None:
    """A box must be ``[x, y, width, height]``: 4 finite numbers, width and height >= 0."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(_is_number(v) for v in value):
        return f"'bbox' must be [x, y, width, height] (4 finite numbers), got {_shorten(value)}"
    if value[2] < 0 or value[3] < 0:
        return f"'bbox' {list(value)} has a negative width or height (the format is [x, y, w, h], not two corners)"
    return None


def rle_problem(value: Any, height: int, width: int) -> str | None:
    """A mask must be a compressed RLE dict whose ``size`` is ``[height, width]`` of its image."""
    if not isinstance(value, dict) or "size" not in value or "counts" not in value:
        return f"'segmentation' must be an RLE dict {{'size': [height, width], 'counts': str}}, got {_shorten(value)}"
    if not isinstance(value["counts"], (str, bytes)):
        return ("'segmentation' counts must be a compressed RLE string (pycocotools.mask.encode, counts decoded "
                f"to str), got {type(value['counts']).__name__}")
    size = value["size"]
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        return f"'segmentation' RLE size {_shorten(size)} differs from the image's [height, width] [{height}, {width}]"
    return None


def _record_problem(record: Any, sizes: dict[int, tuple[int, int]], category_ids: set[int],
                    need_masks: bool) -> str | None:
    if not isinstance(record, dict):
        return f"must be a dict with {RESULT_FIELDS}, got {type(record).__name__}"
    problem = (id_problem(record, "image_id", sizes, "ground-truth image ids")
               or id_problem(record, "category_id", category_ids, "ground-truth category ids"))
    if problem:
        return problem
    for key, check in (("score", score_problem), ("bbox", bbox_problem)):
        problem = check(record[key]) if key in record else f"missing {key!r}"
        if problem:
            return problem
    if "segmentation" in record:
        return rle_problem(record["segmentation"], *sizes[record["image_id"]])
    return "missing 'segmentation' (mask evaluation needs an RLE for every prediction)" if need_masks else None


def check_results(results: Any, gt: dict, *, need_masks: bool = False) -> None:
    """Raise :class:`PredictionError` naming the first record of ``results`` that ``gt`` (a COCO / LVIS
    annotation dict) cannot score: unknown image or category id, missing or invalid bbox / score, an RLE whose
    size is not its image's; with ``need_masks`` also a record without ``segmentation``."""
    if not isinstance(results, list):
        raise PredictionError(f"predictions must be a list of dicts ({RESULT_FIELDS}), got {type(results).__name__}")
    sizes = {image["id"]: (image["height"], image["width"]) for image in gt["images"]}
    category_ids = {category["id"] for category in gt["categories"]}
    for index, record in enumerate(results):
        problem = _record_problem(record, sizes, category_ids, need_masks)
        if problem:
            raise PredictionError(f"prediction {index}: {problem}")


def load_results(path: str | Path) -> list[dict]:
    """The predictions of a results file (a non-empty JSON list); FileNotFoundError when it is missing,
    :class:`PredictionError` when it is not JSON, not a list or empty. Records are checked by
    :func:`check_results`."""
    path = Path(path)
    data = read_json(path, "results file", PredictionError)
    if not isinstance(data, list):
        keys = f" with keys {sorted(data)[:5]}" if isinstance(data, dict) else ""
        raise PredictionError(f"{path} must hold a JSON list of predictions ({RESULT_FIELDS}), "
                              f"got a {type(data).__name__}{keys}")
    if not data:
        raise PredictionError(f"{path} contains no predictions (an empty list)")
    return data


def group_results(results: list[dict], key: str, ids: list[int]) -> list[list[dict]]:
    """Checked ``results`` split into one list per id of ``ids`` (by ``record[key]``), in the order of ``ids``."""
    groups: dict[int, list[dict]] = {i: [] for i in ids}
    for result in results:
        groups[result[key]].append(result)
    return list(groups.values())


def save_results(records: list[list[dict]], path: str | Path) -> Path:
    """Write the per-sample records as one flat JSON list of results (the format official evaluations and
    :func:`load_results` read); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([result for record in records for result in record], handle)
    return path
