"""Binary-mask and box helpers on numpy arrays: COCO RLE, mask → box, mask IoU and box IoU.

Conventions:

* masks are ``bool`` arrays ``[H, W]`` (one) or ``[N, H, W]`` (many);
* boxes are ``[N, 4]`` ``(x1, y1, x2, y2)`` in pixels with the **pixel-edge** convention: a mask
  whose leftmost set column is ``c0`` and rightmost is ``c1`` has ``x1 = c0`` and ``x2 = c1 + 1``,
  so ``x2 - x1`` is the width in pixels (the same convention as COCO's ``toBbox``);
* RLE is COCO's compressed form ``{"size": [H, W], "counts": str}`` (column-major runs that start
  with a run of zeros). Encoding uses pycocotools; decoding validates the run lengths first,
  because pycocotools reads past malformed strings instead of rejecting them.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from pycocotools import mask as coco_mask

RLE = dict[str, Any]


def _as_masks(masks: Any, name: str) -> np.ndarray:
    array = np.asarray(masks)
    if array.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W], got shape {tuple(array.shape)}")
    if array.dtype != np.bool_:
        raise ValueError(f"{name} must be a bool array, got dtype {array.dtype}")
    return array


def _as_boxes(boxes: Any, name: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must be [N, 4], got shape {tuple(array.shape)}")
    return array


def encode_rles(masks: np.ndarray) -> list[RLE]:
    """``[N, H, W]`` bool masks → N COCO RLE dicts ``{"size": [H, W], "counts": str}``."""
    masks = _as_masks(masks, "masks")
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    return [
        {"size": [int(h) for h in rle["size"]], "counts": rle["counts"].decode("ascii")}
        for rle in coco_mask.encode(fortran)
    ]


def encode_rle(mask: np.ndarray) -> RLE:
    """``[H, W]`` bool mask → COCO RLE dict ``{"size": [H, W], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {tuple(mask.shape)}")
    return encode_rles(mask[None])[0]


def _runs_from_string(counts: str) -> list[int]:
    """Run lengths of a compressed COCO counts string (the inverse of pycocotools' rleToString)."""
    runs: list[int] = []
    value, shift, more = 0, 0, False
    for position, char in enumerate(counts):
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise ValueError(f"RLE counts has an invalid character {char!r} at position {position}")
        value |= (code & 0x1F) << shift
        shift += 5
        more = bool(code & 0x20)
        if more:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    if more:
        raise ValueError("RLE counts string ends in the middle of a number")
    return runs


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO RLE (``counts`` as str, bytes or an uncompressed list of ints) → ``[H, W]`` bool mask."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    if len(size) != 2 or any(int(s) != s or s < 0 for s in size):
        raise ValueError(f"RLE size must be [H, W] with non-negative integers, got {size!r}")
    height, width = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = _runs_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(r < 0 for r in runs):
        raise ValueError("RLE counts contain a negative run length")
    if sum(runs) != height * width:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, but size {height}x{width} has {height * width}")
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T.copy()


def decode_rles(rles: list[Mapping[str, Any]], image_size: tuple[int, int]) -> np.ndarray:
    """N RLE dicts → ``[N, H, W]`` bool masks; every RLE must have ``size == image_size``."""
    height, width = image_size
    masks = np.zeros((len(rles), height, width), dtype=bool)
    for i, rle in enumerate(rles):
        mask = decode_rle(rle)
        if mask.shape != (height, width):
            raise ValueError(f"RLE {i} has size {list(mask.shape)}, expected {[height, width]}")
        masks[i] = mask
    return masks


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` bool masks → ``[N, 4]`` float32 xyxy boxes (pixel edges; empty mask → zeros)."""
    masks = _as_masks(masks, "masks")
    n, height, width = masks.shape
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    boxes = np.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            width - cols[:, ::-1].argmax(axis=1),
            height - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.float32)
    boxes[~rows.any(axis=1)] = 0.0
    return boxes.reshape(n, 4)


def mask_iou(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[N, H, W]`` and ``[M, H, W]`` bool masks → ``[N, M]`` float64 (0 when both empty)."""
    a = _as_masks(masks_a, "masks_a")
    b = _as_masks(masks_b, "masks_b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"masks_a and masks_b must have the same [H, W], got {a.shape[1:]} and {b.shape[1:]}")
    flat_a = a.reshape(a.shape[0], -1).astype(np.float64)
    flat_b = b.reshape(b.shape[0], -1).astype(np.float64)
    inter = flat_a @ flat_b.T
    union = flat_a.sum(axis=1)[:, None] + flat_b.sum(axis=1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes → ``[N, M]`` float64 (0 for zero-area unions)."""
    a = _as_boxes(boxes_a, "boxes_a")
    b = _as_boxes(boxes_b, "boxes_b")
    area_a = (a[:, 2] - a[:, 0]).clip(min=0) * (a[:, 3] - a[:, 1]).clip(min=0)
    area_b = (b[:, 2] - b[:, 0]).clip(min=0) * (b[:, 3] - b[:, 1]).clip(min=0)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clip(min=0).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) pixel centre of the mask pixel farthest from the mask's boundary (city-block distance): a point
    prompt that lies unambiguously inside the object. Raises ValueError for an empty mask."""
    from scipy.ndimage import distance_transform_cdt

    mask = _as_masks(np.asarray(mask)[None], "mask")[0]
    if not mask.any():
        raise ValueError("interior_point needs a non-empty mask")
    distance = distance_transform_cdt(np.pad(mask, 1), metric="taxicab")[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(x) + 0.5, float(y) + 0.5
