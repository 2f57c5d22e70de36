"""The interchange types of gleekit: results (``Detections``, ``Tracks``) and prompts.

Everything here is plain numpy and Python, so it crosses every package boundary (predictor,
LLM heads, agents, evaluation) and serialises to JSON. Torch tensors are accepted as inputs and
converted once, in ``__post_init__``.

Results:

* ``Detections`` — one image: ``boxes`` float32 ``[N, 4]`` xyxy in input-image pixels, ``scores``
  float32 ``[N]``, ``labels`` int64 ``[N]`` indexing ``label_names``, optional ``masks`` bool
  ``[N, H, W]``, ``query_embeds`` float32 ``[N, D]``, ``query_index`` int64 ``[N]`` (the decoder query
  that produced each detection) and ``track_ids`` int64 ``[N]``.
* ``Tracks`` — one video: per-frame ``Detections`` whose ``track_ids`` are stable across frames.

Prompts (``Prompt`` is their union): ``Categories``, ``Expression``, ``VisualPrompt``, ``Caption``.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
from pycocotools import mask as coco_mask

from glee_core.mask_ops import RLE, decode_rle, decode_rles, encode_rles
from glee_core.ops import nms as nms_indices

MAX_CATEGORIES = 20000
"""Default upper bound on the number of category names in one ``Categories`` prompt."""

JSON_FORMAT = "gleekit.detections/v1"

_KINDS = {"float": "fiu", "int": "fiu", "bool": "bfiu"}


def _to_numpy(value: Any) -> np.ndarray:
    """numpy view of array-likes; torch tensors are detached and moved to the CPU (no torch import)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _array(value: Any, name: str, dims: Sequence[tuple[str, int | None]], kind: str) -> np.ndarray:
    """Validate ``value`` against ``dims`` (label, size or None) and ``kind``; return it as numpy.

    ``kind`` is "float" (→ float32, finite), "int" (→ int64, floats only when integral) or "bool"
    (bool, or numbers that are all 0/1).
    """
    array = _to_numpy(value)
    expected = [size for _, size in dims]
    empty_shape = [0 if size is None else size for size in expected]
    if array.size == 0 and array.ndim != len(dims) and 0 in empty_shape:
        array = array.reshape(empty_shape)
    shape_text = ", ".join(label for label, _ in dims)
    known = ", ".join(f"{label}={size}" for label, size in dims if size is not None and not label.isdigit())
    if array.ndim != len(dims) or any(size is not None and got != size for got, size in zip(array.shape, expected)):
        detail = f" with {known}" if known else ""
        raise ValueError(f"{name} must be [{shape_text}]{detail}, got {tuple(array.shape)}")
    if array.dtype.kind not in _KINDS[kind]:
        raise ValueError(f"{name} must hold {kind} values, got dtype {array.dtype}")
    if kind == "float":
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused just below
            array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} must be finite, got NaN or inf")
        return array
    if kind == "int":
        if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise ValueError(f"{name} must hold integers, got non-integral {array.dtype} values")
        return array.astype(np.int64, copy=False)
    if array.dtype.kind != "b" and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (or only 0/1), got {array.dtype} values outside {{0, 1}}")
    return array.astype(bool, copy=False)


def _image_size(value: Any, name: str = "image_size") -> tuple[int, int]:
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (H, W), got {value!r}") from None
    if height <= 0 or width <= 0 or tuple(value) != (height, width):
        raise ValueError(f"{name} must be two positive integers (H, W), got {value!r}")
    return height, width


def _category_map(category_ids: Sequence[int] | Mapping[int, int] | None, num_labels: int) -> list[int]:
    """label index → COCO category id; the default is ``label + 1`` (COCO ids start at 1)."""
    if category_ids is None:
        return list(range(1, num_labels + 1))
    if isinstance(category_ids, Mapping):
        missing = [i for i in range(num_labels) if i not in category_ids]
        if missing:
            raise ValueError(f"category_ids has no entry for label indices {missing}")
        return [int(category_ids[i]) for i in range(num_labels)]
    if len(category_ids) != num_labels:
        raise ValueError(f"category_ids must have one id per label name ({num_labels}), got {len(category_ids)}")
    return [int(c) for c in category_ids]


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


@dataclass(eq=False)
class Detections:
    """Detections in one image (see the module docstring for shapes); index it like an array.

    Inputs already of the right dtype are kept without a copy, and basic slicing returns views,
    as with numpy itself.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    image_size: tuple[int, int]
    masks: np.ndarray | None = None
    query_embeds: np.ndarray | None = None
    query_index: np.ndarray | None = None
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.image_size = _image_size(self.image_size)
        if isinstance(self.label_names, str) or not all(isinstance(n, str) for n in self.label_names):
            raise ValueError(f"label_names must be a list of strings, got {self.label_names!r}")
        self.label_names = list(self.label_names)
        self.boxes = _array(self.boxes, "boxes", [("N", None), ("4", 4)], "float")
        n = self.boxes.shape[0]
        if (self.boxes[:, 2] < self.boxes[:, 0]).any() or (self.boxes[:, 3] < self.boxes[:, 1]).any():
            bad = int(np.flatnonzero((self.boxes[:, 2:] < self.boxes[:, :2]).any(axis=1))[0])
            raise ValueError(f"boxes must be xyxy with x2 >= x1 and y2 >= y1, box {bad} is {self.boxes[bad].tolist()}")
        self.scores = _array(self.scores, "scores", [("N", n)], "float")
        self.labels = _array(self.labels, "labels", [("N", n)], "int")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
            raise ValueError(
                f"labels must index label_names (0..{len(self.label_names) - 1}), got values "
                f"{sorted(set(self.labels.tolist()))}"
            )
        height, width = self.image_size
        if self.masks is not None:
            self.masks = _array(self.masks, "masks", [("N", n), ("H", height), ("W", width)], "bool")
        if self.query_embeds is not None:
            self.query_embeds = _array(self.query_embeds, "query_embeds", [("N", n), ("D", None)], "float")
        if self.query_index is not None:
            self.query_index = _array(self.query_index, "query_index", [("N", n)], "int")
        if self.track_ids is not None:
            self.track_ids = _array(self.track_ids, "track_ids", [("N", n)], "int")

    @classmethod
    def empty(cls, image_size: tuple[int, int], label_names: Sequence[str], with_masks: bool = False) -> Detections:
        """No detections; ``with_masks`` gives ``masks`` of shape ``[0, H, W]`` instead of None."""
        height, width = _image_size(image_size)
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            labels=np.zeros(0, np.int64),
            label_names=list(label_names),
            image_size=(height, width),
            masks=np.zeros((0, height, width), bool) if with_masks else None,
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __repr__(self) -> str:
        optional = ("masks", "query_embeds", "query_index", "track_ids")
        extras = [name for name in optional if getattr(self, name) is not None]
        return f"Detections(n={len(self)}, image_size={self.image_size}, label_names={self.label_names}, with={extras})"

    @property
    def label_texts(self) -> list[str]:
        """The label name of each detection."""
        return [self.label_names[i] for i in self.labels.tolist()]

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """Select detections: an int (→ one detection), a slice, a bool mask of length N, or indices."""
        n = len(self)
        if isinstance(index, (int, np.integer)):
            if not -n <= index < n:
                raise IndexError(f"index {index} is out of range for {n} detections")
            rows = np.asarray([index % n], dtype=np.int64)
        elif isinstance(index, slice):
            rows = np.arange(n)[index]
        else:
            rows = _to_numpy(index)
            if rows.dtype == np.bool_:
                if rows.shape != (n,):
                    raise IndexError(f"bool index must have shape ({n},), got {rows.shape}")
                rows = np.flatnonzero(rows)
            elif rows.size == 0:
                rows = rows.astype(np.int64).reshape(0)
            elif rows.ndim != 1 or rows.dtype.kind not in "iu":
                raise IndexError(
                    f"index must be an int, slice, bool mask or 1-D int array, got {rows.dtype} {rows.shape}"
                )
            if rows.size and not (-n <= rows.min() and rows.max() < n):
                raise IndexError(f"indices {rows.tolist()} are out of range for {n} detections")

        def take(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[rows]

        return Detections(
            boxes=self.boxes[rows],
            scores=self.scores[rows],
            labels=self.labels[rows],
            label_names=list(self.label_names),
            image_size=self.image_size,
            masks=take(self.masks),
            query_embeds=take(self.query_embeds),
            query_index=take(self.query_index),
            track_ids=take(self.track_ids),
        )

    def filter(self, min_score: float | None = None, labels: Iterable[int | str] | None = None) -> Detections:
        """Keep detections with ``score >= min_score`` and whose label is in ``labels`` (indices or names)."""
        keep = np.ones(len(self), dtype=bool)
        if min_score is not None:
            keep &= self.scores >= min_score
        if labels is not None:
            wanted = set()
            for label in labels:
                if isinstance(label, str):
                    if label not in self.label_names:
                        raise ValueError(f"unknown label {label!r}; label_names are {self.label_names}")
                    wanted.add(self.label_names.index(label))
                else:
                    wanted.add(int(label))
            keep &= np.isin(self.labels, sorted(wanted))
        return self[keep]

    def sort_by_score(self) -> Detections:
        """Detections in decreasing score order (stable for ties)."""
        return self[np.argsort(-self.scores, kind="stable")]

    def topk(self, k: int) -> Detections:
        """The ``k`` highest-scoring detections, best first (all of them when ``k >= N``)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return self[np.argsort(-self.scores, kind="stable")[:k]]

    def nms(self, iou_threshold: float, class_agnostic: bool = True) -> Detections:
        """Greedy box NMS (drops boxes with IoU ``> iou_threshold`` to a better one), best first."""
        labels = None if class_agnostic else self.labels
        return self[nms_indices(self.boxes, self.scores, iou_threshold, labels=labels)]

    def to_label_map(self, background: int = -1) -> np.ndarray:
        """Semantic segmentation from the same call: an int64 ``[H, W]`` map where each pixel takes the label of
        the highest-scoring mask covering it, ``background`` where no mask does. Stuff classes (sky, road) come
        back as masks like things do; filter by score first (``filter(min_score=...)``) to drop weak masks."""
        if self.masks is None:
            raise ValueError("a label map needs masks; these detections have none (boxes only)")
        label_map = np.full(self.image_size, background, dtype=np.int64)
        for i in np.argsort(self.scores, kind="stable"):  # ascending: a better mask paints over a worse one
            label_map[self.masks[i]] = self.labels[i]
        return label_map

    def to_rle(self) -> list[RLE]:
        """COCO RLE of each mask: ``{"size": [H, W], "counts": str}``."""
        if self.masks is None:
            raise ValueError("these detections have no masks to encode")
        return encode_rles(self.masks)

    def to_coco(
        self, image_id: int, category_ids: Sequence[int] | Mapping[int, int] | None = None
    ) -> list[dict[str, Any]]:
        """COCO result dicts: ``image_id``, ``category_id``, ``bbox`` (xywh), ``score``, ``area`` and,
        with masks, ``segmentation`` (RLE, str counts; ``area`` is then the mask's pixel count).

        ``category_ids[label]`` is the COCO id of each label index; the default is ``label + 1``.
        """
        ids = _category_map(category_ids, len(self.label_names))
        xywh = _xyxy_to_xywh(self.boxes)
        rles = self.to_rle() if self.masks is not None else None
        areas = self.masks.sum(axis=(1, 2)) if self.masks is not None else xywh[:, 2] * xywh[:, 3]
        results = []
        for i in range(len(self)):
            result = {
                "image_id": image_id,
                "category_id": ids[int(self.labels[i])],
                "bbox": [float(v) for v in xywh[i]],
                "score": float(self.scores[i]),
                "area": float(areas[i]),
            }
            if rles is not None:
                result["segmentation"] = rles[i]
            results.append(result)
        return results

    @classmethod
    def from_coco(
        cls,
        annotations: Sequence[Mapping[str, Any]],
        image_size: tuple[int, int],
        label_names: Sequence[str],
        category_ids: Sequence[int] | Mapping[int, int] | None = None,
    ) -> Detections:
        """COCO annotations or results of one image → Detections (``score`` defaults to 1).

        ``segmentation`` may be an RLE (compressed or uncompressed) or polygons; either every
        annotation has one (→ masks) or none does (→ ``masks=None``).
        """
        height, width = _image_size(image_size)
        label_of = {cid: label for label, cid in enumerate(_category_map(category_ids, len(label_names)))}
        if not annotations:
            return cls.empty((height, width), label_names)
        with_segm = ["segmentation" in ann for ann in annotations]
        if any(with_segm) and not all(with_segm):
            raise ValueError(f"annotation {with_segm.index(False)} has no segmentation while others do")
        boxes, labels = [], []
        for i, ann in enumerate(annotations):
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append([x, y, x + w, y + h])
            if ann["category_id"] not in label_of:
                raise ValueError(f"annotation {i} has category_id {ann['category_id']}, not one of {sorted(label_of)}")
            labels.append(label_of[ann["category_id"]])
        masks = None
        if all(with_segm):
            masks = np.stack([_decode_segmentation(ann["segmentation"], height, width) for ann in annotations])
        return cls(
            boxes=np.asarray(boxes, np.float32),
            scores=np.asarray([float(ann.get("score", 1.0)) for ann in annotations], np.float32),
            labels=np.asarray(labels, np.int64),
            label_names=list(label_names),
            image_size=(height, width),
            masks=masks,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists of numbers; masks as COCO RLE); exact float32 round trip."""

        def listed(values: np.ndarray | None) -> list | None:
            return None if values is None else values.tolist()

        return {
            "format": JSON_FORMAT,
            "image_size": list(self.image_size),
            "label_names": list(self.label_names),
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "labels": self.labels.tolist(),
            "masks": None if self.masks is None else self.to_rle(),
            "query_embeds": listed(self.query_embeds),
            "query_index": listed(self.query_index),
            "track_ids": listed(self.track_ids),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Detections:
        """Inverse of ``to_json_dict``."""
        if data.get("format") != JSON_FORMAT:
            raise ValueError(f"expected a dict with format {JSON_FORMAT!r}, got format {data.get('format')!r}")
        image_size = _image_size(data["image_size"])
        return cls(
            boxes=data["boxes"],
            scores=data["scores"],
            labels=data["labels"],
            label_names=data["label_names"],
            image_size=image_size,
            masks=None if data["masks"] is None else decode_rles(data["masks"], image_size),
            query_embeds=data.get("query_embeds"),
            query_index=data.get("query_index"),
            track_ids=data.get("track_ids"),
        )


def _decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (RLE dict or polygon list) → ``[H, W]`` bool mask."""
    if isinstance(segmentation, Mapping):
        mask = decode_rle(segmentation)
    else:
        polygons = [list(map(float, p)) for p in segmentation]
        if not polygons or any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError("polygon segmentations must be lists of at least 3 (x, y) pairs")
        merged = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
        mask = decode_rle(merged)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation has size {list(mask.shape)}, expected {[height, width]}")
    return mask


@dataclass(frozen=True)
class TrackSummary:
    """One track over a video: the frames it appears in, its mean score and its label.

    ``label`` is the label with the largest summed score over the track's detections (ties: lower index).
    """

    track_id: int
    frames: tuple[int, ...]
    mean_score: float
    label: int
    label_name: str


@dataclass(eq=False)
class Tracks:
    """One video: ``frames[t]`` are the detections of frame t, with ``track_ids`` stable over time."""

    frames: list[Detections]

    def __post_init__(self) -> None:
        self.frames = list(self.frames)
        if not self.frames:
            raise ValueError("Tracks needs at least one frame")
        for t, frame in enumerate(self.frames):
            if not isinstance(frame, Detections):
                raise ValueError(f"frame {t} must be Detections, got {type(frame).__name__}")
            if frame.label_names != self.frames[0].label_names:
                raise ValueError(
                    f"frame {t} has label_names {frame.label_names}, frame 0 has {self.frames[0].label_names}"
                )
            if len(frame) and frame.track_ids is None:
                raise ValueError(f"frame {t} has {len(frame)} detections but no track_ids")
            if frame.track_ids is not None and len(np.unique(frame.track_ids)) != len(frame):
                raise ValueError(f"frame {t} repeats a track id: {frame.track_ids.tolist()}")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, frame: int) -> Detections:
        return self.frames[frame]

    @property
    def label_names(self) -> list[str]:
        return self.frames[0].label_names

    @property
    def track_ids(self) -> np.ndarray:
        """Sorted unique track ids over the whole video, int64."""
        ids = [f.track_ids for f in self.frames if f.track_ids is not None]
        return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)

    def track_summary(self) -> list[TrackSummary]:
        """One ``TrackSummary`` per track id, in increasing id order."""
        frames: dict[int, list[int]] = {}
        scores: dict[int, list[float]] = {}
        label_scores: dict[int, np.ndarray] = {}
        for t, frame in enumerate(self.frames):
            for i in range(len(frame)):
                tid = int(frame.track_ids[i])
                frames.setdefault(tid, []).append(t)
                scores.setdefault(tid, []).append(float(frame.scores[i]))
                label_scores.setdefault(tid, np.zeros(len(self.label_names)))[frame.labels[i]] += frame.scores[i]
        summaries = []
        for tid in sorted(frames):
            label = int(np.argmax(label_scores[tid]))
            summaries.append(
                TrackSummary(tid, tuple(frames[tid]), float(np.mean(scores[tid])), label, self.label_names[label])
            )
        return summaries

    def to_ytvis(
        self, video_id: int, category_ids: Sequence[int] | Mapping[int, int] | None = None
    ) -> list[dict[str, Any]]:
        """YouTube-VIS results: per track ``video_id``, ``category_id``, ``score`` (mean) and
        ``segmentations`` (one RLE per frame, None where the track is absent). Needs masks."""
        ids = _category_map(category_ids, len(self.label_names))
        if any(frame.masks is None for frame in self.frames if len(frame)):
            raise ValueError("to_ytvis needs masks in every frame")
        rles = [dict(zip(f.track_ids.tolist(), f.to_rle())) if len(f) else {} for f in self.frames]
        return [
            {
                "video_id": video_id,
                "category_id": ids[summary.label],
                "score": summary.mean_score,
                "segmentations": [frame_rles.get(summary.track_id) for frame_rles in rles],
            }
            for summary in self.track_summary()
        ]

    def to_mot(self) -> str:
        """MOTChallenge text: one ``frame,id,x,y,w,h,score,-1,-1,-1`` line per detection, frames from 1,
        boxes in pixels (top-left corner, width, height)."""
        lines = []
        for t, frame in enumerate(self.frames, start=1):
            for tid, (x1, y1, x2, y2), score in zip(frame.track_ids.tolist() if len(frame) else [],
                                                     frame.boxes.tolist(), frame.scores.tolist()):
                lines.append(f"{t},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1")
        return "\n".join(lines) + ("\n" if lines else "")

    def to_json_dict(self) -> dict[str, Any]:
        return {"frames": [frame.to_json_dict() for frame in self.frames]}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Tracks:
        return cls([Detections.from_json_dict(frame) for frame in data["frames"]])


@dataclass
class Categories:
    """Category names to detect (one text prompt each). Names are stripped; duplicates are refused
    case-insensitively, because the CLIP tokenizer lowercases."""

    names: list[str]
    max_categories: int = field(default=MAX_CATEGORIES, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.names, str) or not isinstance(self.names, Iterable):
            raise ValueError(f"names must be a list of strings, got {type(self.names).__name__} {self.names!r}")
        names = list(self.names)
        if not names:
            raise ValueError("Categories needs at least one name")
        if len(names) > self.max_categories:
            raise ValueError(
                f"got {len(names)} category names, more than max_categories={self.max_categories}; "
                "split them into several calls or pass a larger max_categories"
            )
        seen: dict[str, str] = {}
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"category name {i} must be a non-empty string, got {name!r}")
            key = name.strip().lower()
            if key in seen:
                raise ValueError(f"duplicate category name {name.strip()!r} (same as {seen[key]!r}, ignoring case)")
            seen[key] = name.strip()
        self.names = list(seen.values())

    def __len__(self) -> int:
        return len(self.names)


_PUNCTUATION = re.compile(r"[.,'!?\"()*#:;]")


@dataclass
class Expression:
    """A referring expression ("the small red circle on the left")."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"expression text must be a non-empty string, got {self.text!r}")
        if not self.normalized.strip():
            raise ValueError(f"expression {self.text!r} has no words left after removing punctuation")

    @property
    def normalized(self) -> str:
        """The official referring normalisation: lowercase, drop ``.,'!?"()*#:;``, ``-`` and ``/`` → space."""
        return _PUNCTUATION.sub("", self.text.lower()).replace("-", " ").replace("/", " ")


@dataclass
class Caption:
    """A sentence whose phrases are grounded (GLIP-style): one label per phrase.

    ``spans`` are character offsets ``(start, end)`` (end exclusive, on word boundaries, not overlapping);
    None finds them with :func:`glee_core.phrases.find_phrases`. ``context`` False (default) encodes every
    phrase on its own, as GLEE encodes category names; True encodes the whole caption once and pools each
    phrase's tokens from it (GLIP's way: phrases see their context; early fusion sees the sentence).
    Detections' labels index :attr:`phrases`; ``spans[label]`` maps a detection back to the text.
    """

    text: str
    spans: list[tuple[int, int]] | None = None
    context: bool = False

    def __post_init__(self) -> None:
        from glee_core.phrases import check_spans, find_phrases

        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"caption must be a non-empty string, got {self.text!r}")
        if self.spans is None:
            self.spans = find_phrases(self.text)
            if not self.spans:
                raise ValueError(f"no phrase found in the caption {self.text!r}; give spans explicitly")
        else:
            if isinstance(self.spans, (str, bytes)) or not isinstance(self.spans, Iterable):
                raise ValueError(f"spans must be a list of (start, end) pairs, got {self.spans!r}")
            self.spans = check_spans(self.text, list(self.spans))
            if not self.spans:
                raise ValueError("Caption needs at least one span")

    @property
    def phrases(self) -> list[str]:
        return [self.text[start:end] for start, end in self.spans]


@dataclass(eq=False)
class VisualPrompt:
    """Visual prompts in input-image pixels: ``boxes`` ``[N, 4]`` xyxy, ``points`` ``[P, 2]`` xy with
    ``point_labels`` ``[P]`` (1 foreground, 0 background; default all 1), ``scribbles`` (list of
    ``[K, 2]`` xy polylines) and ``masks`` ``[M, H, W]`` bool. At least one prompt is required."""

    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    scribbles: list[np.ndarray] | None = None
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.boxes is not None:
            self.boxes = _array(self.boxes, "boxes", [("N", None), ("4", 4)], "float")
            for i, (x1, y1, x2, y2) in enumerate(self.boxes.tolist()):
                if x2 <= x1 or y2 <= y1:
                    raise ValueError(f"box {i} {[x1, y1, x2, y2]} must have x2 > x1 and y2 > y1")
        if self.points is not None:
            self.points = _array(self.points, "points", [("P", None), ("2", 2)], "float")
            labels = np.ones(len(self.points)) if self.point_labels is None else self.point_labels
            self.point_labels = _array(labels, "point_labels", [("P", len(self.points))], "int")
            if not np.isin(self.point_labels, (0, 1)).all():
                raise ValueError(f"point_labels must be 0 or 1, got {self.point_labels.tolist()}")
        elif self.point_labels is not None:
            raise ValueError("point_labels were given without points")
        if self.scribbles is not None:
            self.scribbles = [
                _array(s, f"scribble {i}", [("K", None), ("2", 2)], "float") for i, s in enumerate(self.scribbles)
            ]
            for i, scribble in enumerate(self.scribbles):
                if len(scribble) == 0:
                    raise ValueError(f"scribble {i} has no points")
        if self.masks is not None:
            self.masks = _array(self.masks, "masks", [("M", None), ("H", None), ("W", None)], "bool")
            empty = np.flatnonzero(~self.masks.any(axis=(1, 2)))
            if empty.size:
                raise ValueError(f"prompt masks {empty.tolist()} are empty")
        if self.num_prompts == 0:
            raise ValueError("VisualPrompt needs at least one box, point, scribble or mask")

    @property
    def num_prompts(self) -> int:
        """Total number of boxes, points, scribbles and masks."""
        return sum(
            0 if values is None else len(values) for values in (self.boxes, self.points, self.scribbles, self.masks)
        )

    def validate_against(self, image_size: tuple[int, int]) -> None:
        """Raise ValueError if a box, point or scribble leaves the ``(H, W)`` image or a mask has another size."""
        height, width = _image_size(image_size)
        where = f"the {height}x{width} (HxW) image"

        def outside(xy: np.ndarray) -> np.ndarray:
            return (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)

        if self.boxes is not None:
            bad = np.flatnonzero(outside(self.boxes[:, :2]) | outside(self.boxes[:, 2:]))
            if bad.size:
                raise ValueError(f"box {int(bad[0])} {self.boxes[bad[0]].tolist()} lies outside {where}")
        if self.points is not None:
            bad = np.flatnonzero(outside(self.points))
            if bad.size:
                raise ValueError(f"point {int(bad[0])} {self.points[bad[0]].tolist()} lies outside {where}")
        for i, scribble in enumerate(self.scribbles or []):
            bad = np.flatnonzero(outside(scribble))
            if bad.size:
                raise ValueError(f"scribble {i} point {scribble[bad[0]].tolist()} lies outside {where}")
        if self.masks is not None and self.masks.shape[1:] != (height, width):
            raise ValueError(f"prompt masks are {self.masks.shape[1]}x{self.masks.shape[2]}, expected {where}")


Prompt = Union[Categories, Expression, VisualPrompt, Caption]
