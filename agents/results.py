"""``Detections`` → tool results: clipped pixel boxes, COCO RLE masks, object records, overlays and summaries."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from agents.numbered import box_masks, draw_numbered
from agents.schemas import MaskRLE, ObjectInfo, TrackInfo
from glee_core.mask_ops import decode_rle
from glee_core.structures import Detections, Tracks
from glee_core.visualize import draw_detections

SUMMARY_OBJECTS = 10
"""Objects listed one by one in a text summary; the rest are counted."""


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


def object_infos(detections: Detections, with_masks: bool, ids: list[str | None] | None = None) -> list[ObjectInfo]:
    """One ``ObjectInfo`` per detection, in order; ``ids`` are their handles (None when not registered)."""
    boxes = clipped_boxes(detections)
    if with_masks and detections.masks is None:
        raise ValueError("masks were asked for but the detections have none")
    rles = detections.to_rle() if with_masks else [None] * len(detections)
    areas = (np.count_nonzero(detections.masks, axis=(1, 2)) if with_masks
             else (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    track_ids = detections.track_ids
    return [
        ObjectInfo(
            id=None if ids is None else ids[i],
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
