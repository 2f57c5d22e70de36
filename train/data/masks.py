"""Annotation geometry: rasterise COCO-family segmentations (pycocotools) and ReasonSeg polygons (LISA's rules),
and the inverse for writers (mask → uncompressed RLE, mask → pixel-centre boundary polygons).

ReasonSeg masks follow LISA's ``get_mask_from_json`` but draw with PIL instead of OpenCV (no cv2 dependency):
each polygon's points are cast to int32 (truncation toward zero), its outline is drawn with a 1-px line and its
inside filled. PIL's and cv2's scan conversion of the same integer polygon agree on the inside and on the vertices,
but may differ by one pixel along slanted edges (different edge rounding), i.e. a 1-px boundary difference.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from glee_core.mask_ops import decode_rle

IGNORE_VALUE = 255
"""ReasonSeg mask value of pixels excluded from evaluation (labels containing "ignore")."""


def _rle_mask(rle: dict, height: int, width: int) -> np.ndarray:
    mask = decode_rle(rle)
    if mask.shape != (height, width):
        raise ValueError(f"RLE size {list(mask.shape)} does not match the image size {[height, width]}")
    return mask


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO-family segmentation → bool ``[H, W]``.

    ``segmentation`` is ``None`` or ``[]`` (empty mask), a list of flat polygons ``[x1, y1, x2, y2, ...]``
    (pycocotools ``frPyObjects`` + ``merge`` + ``decode``), an RLE dict (compressed or uncompressed counts),
    or a list of RLE dicts (their union, as RefCLEF / LISA use).
    """
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return np.zeros((height, width), dtype=bool)
    if isinstance(segmentation, dict):
        return _rle_mask(segmentation, height, width)
    if all(isinstance(part, dict) for part in segmentation):
        return np.logical_or.reduce([_rle_mask(part, height, width) for part in segmentation])
    rles = coco_mask.frPyObjects([[float(v) for v in polygon] for polygon in segmentation], height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def _draw(canvas: Image.Image, points: np.ndarray, value: int) -> None:
    """Outline (1 px) and fill one polygon of int points ``[K, 2]`` (x, y) with ``value``."""
    draw = ImageDraw.Draw(canvas)
    xy = [(int(x), int(y)) for x, y in points]
    if len(xy) == 1:
        draw.point(xy, fill=value)
    elif len(xy) == 2:
        draw.line(xy, fill=value, width=1)
    else:
        draw.polygon(xy, fill=value, outline=value)


def reasonseg_mask(shapes: Sequence[tuple[str, np.ndarray]], height: int, width: int) -> np.ndarray:
    """LISA's ReasonSeg mask: uint8 ``[H, W]``, 0 background, 1 target, 255 ignore.

    ``shapes`` are ``(label, points float [K, 2] xy pixels)``. Labels equal to "flag" (any case) are skipped;
    labels containing "ignore" (any case) draw 255, every other label draws 1. Polygons are drawn largest
    first (area = pixels of the polygon drawn alone), so smaller polygons overwrite larger ones.
    """
    kept = [(label, points.astype(np.int32)) for label, points in shapes if label.lower() != "flag"]
    areas = []
    for _, points in kept:
        alone = Image.new("L", (width, height), 0)
        _draw(alone, points, 1)
        areas.append(int(np.asarray(alone).sum()))
    canvas = Image.new("L", (width, height), 0)
    for index in np.argsort(areas, kind="stable")[::-1]:
        label, points = kept[index]
        _draw(canvas, points, IGNORE_VALUE if "ignore" in label.lower() else 1)
    return np.asarray(canvas, dtype=np.uint8).copy()


def uncompressed_rle(mask: np.ndarray) -> dict:
    """bool ``[H, W]`` → COCO uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}`` (column-major runs,
    starting with a run of zeros), the form of COCO crowd and YouTube-VIS ground truth."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


# 8-neighbour offsets (dx, dy), clockwise on screen (y down), starting west
_RING = ((-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1))


def _trace(component: np.ndarray) -> list[tuple[int, int]]:
    """Moore-neighbour trace of one 8-connected component's outer boundary: pixel centres (x, y), clockwise."""
    ys, xs = np.nonzero(component)
    start = (int(xs[0]), int(ys[0]))  # first pixel in raster order: its west neighbour is background
    height, width = component.shape

    def inside(x: int, y: int) -> bool:
        return 0 <= x < width and 0 <= y < height and bool(component[y, x])

    def step(pixel: tuple[int, int], back: int) -> tuple[tuple[int, int], int] | None:
        for k in range(1, 9):
            dx, dy = _RING[(back + k) % 8]
            if inside(pixel[0] + dx, pixel[1] + dy):
                bx, by = _RING[(back + k - 1) % 8]
                nxt = (pixel[0] + dx, pixel[1] + dy)
                return nxt, _RING.index((pixel[0] + bx - nxt[0], pixel[1] + by - nxt[1]))
        return None

    first = step(start, 0)
    if first is None:
        return [start]
    points, state = [start], first
    for _ in range(8 * component.size + 8):
        points.append(state[0])
        state = step(*state)
        if state == first:
            return points[:-1] if points[-1] == start else points
    raise RuntimeError("boundary trace did not close")  # unreachable for a finite component


def _drop_collinear(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Remove vertices whose incoming and outgoing steps have the same direction (the polygon is unchanged)."""
    if len(points) < 3:
        return points
    kept = []
    for i, (x, y) in enumerate(points):
        px, py = points[i - 1]
        nx, ny = points[(i + 1) % len(points)]
        if (x - px, y - py) != (nx - x, ny - y):
            kept.append((x, y))
    return kept or points[:1]


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """bool ``[H, W]`` → one polygon per 8-connected component: float ``[K, 2]`` (x, y) vertices at the centres
    of its outer boundary pixels (largest component first).

    Drawn back with LISA's rule (1-px outline + fill of the int points, ``reasonseg_mask``) each polygon
    reproduces its component exactly, except for holes, which are filled (a LabelMe polygon has no holes).
    """
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=bool))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1)) if count else []
    order = sorted(range(count), key=lambda i: (-sizes[i], i))
    return [np.asarray(_drop_collinear(_trace(labels == i + 1)), dtype=np.float64) for i in order]
