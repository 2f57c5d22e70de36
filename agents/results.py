"""``Detections`` → tool results: clipped pixel boxes, COCO RLE masks, object records, overlays and summaries."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from agents.numbered import box_masks, draw_numbered
from agents.schemas import ImageResult, MaskRLE, ObjectInfo, TrackInfo
from glee_core.mask_ops import box_iou, decode_rle, mask_iou
from glee_core.structures import Detections, Tracks
from glee_core.visualize import draw_detections

SUMMARY_OBJECTS = 10
"""Objects listed one by one in a text summary; the rest are counted."""
SUMMARY_RESULTS = 20
"""Results of a grouped call summarised one by one; the rest are counted."""
INSIDE_FRACTION = 0.9
"""One object is 'inside' another when at least this fraction of its area lies within the other."""


@dataclass(frozen=True)
class ObjectRecord:
    """What an object handle (``obj_N``) stands for: its image handle and its detection."""

    image: str
    label: str
    score: float
    box: tuple[float, float, float, float]
    mask: MaskRLE | None


def clipped_boxes(detections: Detections) -> np.ndarray:
    """[N, 4] xyxy boxes clipped to the image, rounded to 0.1 pixel."""
    height, width = detections.image_size
    boxes = detections.boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return np.round(boxes, 1)


def object_infos(detections: Detections, with_masks: bool) -> list[ObjectInfo]:
    """One ``ObjectInfo`` per detection, in order, without handles (``id`` None: the toolkit registers them)."""
    boxes = clipped_boxes(detections)
    if with_masks and detections.masks is None:
        raise ValueError("masks were asked for but the detections have none")
    rles = detections.to_rle() if with_masks else [None] * len(detections)
    areas = (np.count_nonzero(detections.masks, axis=(1, 2)) if with_masks
             else (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    track_ids = detections.track_ids
    return [
        ObjectInfo(
            label=detections.label_names[int(detections.labels[i])],
            score=round(float(detections.scores[i]), 4),
            box=boxes[i].tolist(),
            area=int(round(float(areas[i]))),
            mask=None if rles[i] is None else MaskRLE(size=list(rles[i]["size"]), counts=rles[i]["counts"]),
            track_id=None if track_ids is None else int(track_ids[i]),
        )
        for i in range(len(detections))
    ]


def _short_box(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


def summarize_objects(where: str, objects: list[ObjectInfo], num_found: int, nothing: str) -> str:
    """"3 objects in img_1 (320x240): obj_2 'circle' 0.97 at [12, 30, 80, 95]; …" (``nothing`` when empty)."""
    if not objects:
        return f"{nothing} in {where}."
    listed = "; ".join(f"{o.id + ' ' if o.id else ''}{o.label!r} {o.score:.2f} at {_short_box(o.box)}"
                       for o in objects[:SUMMARY_OBJECTS])
    rest = len(objects) - SUMMARY_OBJECTS
    tail = f"; and {rest} more (see the result)" if rest > 0 else ""
    cut = f" (the best {len(objects)} of {num_found} shown)" if num_found > len(objects) else ""
    noun = "object" if len(objects) == 1 else "objects"
    return f"{len(objects)} {noun} in {where}{cut}: {listed}{tail}."


def track_infos(tracks: Tracks) -> list[TrackInfo]:
    return [
        TrackInfo(track_id=s.track_id, label=s.label_name, first_frame=s.frames[0], last_frame=s.frames[-1],
                  num_frames=len(s.frames), mean_score=round(s.mean_score, 4))
        for s in tracks.track_summary()
    ]


def summarize_tracks(infos: list[TrackInfo], num_frames: int, size: tuple[int, int]) -> str:
    where = f"{num_frames} frames ({size[1]}x{size[0]})"
    if not infos:
        return f"No objects tracked over {where}."
    listed = "; ".join(f"#{t.track_id} {t.label!r} frames {t.first_frame}-{t.last_frame} "
                       f"({t.num_frames} seen, mean score {t.mean_score:.2f})" for t in infos[:SUMMARY_OBJECTS])
    rest = len(infos) - SUMMARY_OBJECTS
    noun = "track" if len(infos) == 1 else "tracks"
    return f"{len(infos)} {noun} over {where}: {listed}" + (f"; and {rest} more." if rest > 0 else ".")


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] RGB array."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(image: np.ndarray, detections: Detections, names: list[str] | None = None) -> bytes:
    """PNG bytes of ``detections`` drawn on ``image``; ``names`` replace the label captions (e.g. object ids)."""
    if names is not None:
        detections = Detections(boxes=clipped_boxes(detections), scores=detections.scores,
                                labels=np.arange(len(detections)), label_names=list(names),
                                image_size=detections.image_size, masks=detections.masks)
    return encode_png(draw_detections(image, detections))


def numbered_overlay_png(image: np.ndarray, detections: Detections) -> bytes:
    """PNG bytes of ``image`` with each detection outlined (its mask, else its box) and numbered 1..N in order."""
    masks = detections.masks if detections.masks is not None else \
        box_masks(clipped_boxes(detections), detections.image_size)
    return encode_png(draw_numbered(image, masks))


def record_info(handle: str, record: ObjectRecord) -> tuple[ObjectInfo, np.ndarray]:
    """The ``ObjectInfo`` of an object handle and its bool [H, W] mask (the record must have one)."""
    mask = decode_rle(record.mask.model_dump())
    info = ObjectInfo(id=handle, label=record.label, score=record.score, box=list(record.box),
                      area=int(np.count_nonzero(mask)), mask=record.mask)
    return info, mask


def summarize_selection(where: str, objects: list[ObjectInfo], area: int) -> str:
    """"Selected 2 objects in img_1 (256x256), 1834 pixels in all: obj_2 'circle' 0.97 at [...]; …"."""
    listed = "; ".join(f"{o.id} {o.label!r} {o.score:.2f} at {_short_box(o.box)}" for o in objects[:SUMMARY_OBJECTS])
    rest = len(objects) - SUMMARY_OBJECTS
    noun = "object" if len(objects) == 1 else "objects"
    return f"Selected {len(objects)} {noun} in {where}, {area} pixels in all: {listed}" + \
        (f"; and {rest} more." if rest > 0 else ".")


def summarize_groups(results: list[ImageResult], num_images: int, num_expressions: int = 1) -> str:
    """"3 results (3 images):" then one line per result (its own summary), at most ``SUMMARY_RESULTS`` lines."""
    shape = f"{num_images} image{'s' * (num_images != 1)}"
    if num_expressions > 1:
        shape += f" x {num_expressions} expressions"
    lines = [f"[{k}] {r.summary}" for k, r in enumerate(results[:SUMMARY_RESULTS])]
    if len(results) > SUMMARY_RESULTS:
        lines.append(f"and {len(results) - SUMMARY_RESULTS} more results (see 'results').")
    noun = "result" if len(results) == 1 else "results"
    return "\n".join([f"{len(results)} {noun} ({shape}):", *lines])


def crop_window(box: tuple[float, float, float, float], padding: int,
                size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel window ``(x1, y1, x2, y2)`` (x2, y2 exclusive) around an xyxy pixel ``box`` grown by ``padding``
    pixels on every side, clipped to the ``(H, W)`` image and at least one pixel wide and high."""
    height, width = size

    def span(low: float, high: float, limit: int) -> tuple[int, int]:
        start = min(max(int(np.floor(low - padding)), 0), limit - 1)
        return start, min(max(int(np.ceil(high + padding)), start + 1), limit)

    (x1, x2), (y1, y2) = span(box[0], box[2], width), span(box[1], box[3], height)
    return x1, y1, x2, y2


@dataclass(frozen=True)
class Comparison:
    """How two objects of one image relate (see ``CompareResult`` for the meaning of each field)."""

    iou: float
    iou_of: str
    box_iou: float
    first_area: int
    second_area: int
    area_ratio: float | None
    dx: float
    dy: float
    relation: str


def _box_area(box: tuple[float, ...]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _box_intersection(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return _box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def relation_of(intersection: float, first_area: float, second_area: float, dx: float, dy: float) -> str:
    """Where the first object is relative to the second: 'inside', 'contains', 'overlapping' or the main
    direction of the centre offset ``(dx, dy)`` (first minus second, pixels, y down)."""
    first_in = first_area > 0 and intersection >= INSIDE_FRACTION * first_area
    second_in = second_area > 0 and intersection >= INSIDE_FRACTION * second_area
    if first_in and not second_in:
        return "inside"
    if second_in and not first_in:
        return "contains"
    if intersection > 0:
        return "overlapping"
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def compare_records(first: ObjectRecord, second: ObjectRecord) -> Comparison:
    """Overlap, areas, centre offset and relation of two objects of one image; on their masks when both have one,
    else on their boxes (``box_iou`` always on the boxes)."""
    boxes = np.array([first.box, second.box], dtype=np.float64)
    boxes_iou = float(box_iou(boxes[:1], boxes[1:])[0, 0])
    if first.mask is not None and second.mask is not None:
        a, b = decode_rle(first.mask.model_dump()), decode_rle(second.mask.model_dump())
        iou, iou_of = float(mask_iou(a[None], b[None])[0, 0]), "masks"
        areas = int(np.count_nonzero(a)), int(np.count_nonzero(b))
        intersection = float(np.count_nonzero(a & b))
    else:
        iou, iou_of = boxes_iou, "boxes"
        areas = int(round(_box_area(first.box))), int(round(_box_area(second.box)))
        intersection = _box_intersection(first.box, second.box)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    dx, dy = (float(v) + 0.0 for v in np.round(centres[0] - centres[1], 1))  # + 0.0: no -0.0
    return Comparison(
        iou=round(iou, 4), iou_of=iou_of, box_iou=round(boxes_iou, 4), first_area=areas[0], second_area=areas[1],
        area_ratio=round(areas[0] / areas[1], 4) if areas[1] else None, dx=dx, dy=dy,
        relation=relation_of(intersection, *areas, dx, dy),
    )


_RELATION_VERBS = {"inside": "is inside", "contains": "contains", "overlapping": "overlaps"}


def summarize_comparison(where: str, names: tuple[str, str], c: Comparison) -> str:
    """"obj_2 'circle' is left of obj_5 'square' in img_1 (256x256): mask IoU 0.00, …"."""
    verb = _RELATION_VERBS.get(c.relation, f"is {c.relation}")
    ratio = f"{c.area_ratio:.2f}" if c.area_ratio is not None else "undefined"
    iou = f"{'mask' if c.iou_of == 'masks' else 'box'} IoU {c.iou:.2f}" + \
        (f", box IoU {c.box_iou:.2f}" if c.iou_of == "masks" else "")
    return (f"{names[0]} {verb} {names[1]} in {where}: {iou}; areas {c.first_area} and {c.second_area} pixels "
            f"(ratio {ratio}); centre offset dx {c.dx:.1f}, dy {c.dy:.1f} pixels.")
