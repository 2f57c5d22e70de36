"""Draw ``Detections`` on an image: alpha-blended masks, box outlines and "label score" captions.

Colours come from a fixed palette, keyed by track id when the detections have ``track_ids`` and by
label otherwise, so the same object or category keeps its colour across frames and calls.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glee_core.image_io import ImageSource, load_image
from glee_core.structures import Detections, Tracks

_GOLDEN_RATIO = 0.618033988749895


def color_for(key: int) -> tuple[int, int, int]:
    """A saturated RGB colour for an integer key; consecutive keys get well-separated hues."""
    hue = (key * _GOLDEN_RATIO) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_detections(
    image: ImageSource,
    detections: Detections,
    show_masks: bool = True,
    show_boxes: bool = True,
    show_labels: bool = True,
    alpha: float = 0.5,
    line_width: int = 2,
) -> np.ndarray:
    """Return a new ``uint8`` ``[H, W, 3]`` overlay; ``image`` must have ``detections.image_size``.

    Masks are blended as ``(1 - alpha) * pixel + alpha * colour``; boxes are outlined with
    ``line_width`` pixels; captions ("label score", plus "#id" for tracks) use PIL's default font.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    canvas = load_image(image)
    if canvas.shape[:2] != detections.image_size:
        raise ValueError(
            f"image is {canvas.shape[0]}x{canvas.shape[1]} (HxW) but detections are for "
            f"{detections.image_size[0]}x{detections.image_size[1]}"
        )
    keys = detections.track_ids if detections.track_ids is not None else detections.labels
    colors = [color_for(int(key)) for key in keys]
    if show_masks and detections.masks is not None:
        blended = canvas.astype(np.float32)
        for mask, color in zip(detections.masks, colors):
            blended[mask] = (1.0 - alpha) * blended[mask] + alpha * np.asarray(color, np.float32)
        canvas = np.round(blended).astype(np.uint8)
    if not (show_boxes or show_labels) or len(detections) == 0:
        return canvas
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    for i, color in enumerate(colors):
        x1, y1, x2, y2 = detections.boxes[i].tolist()
        if show_boxes:
            draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=color, width=line_width)
        if show_labels:
            text = f"{detections.label_names[detections.labels[i]]} {detections.scores[i]:.2f}"
            if detections.track_ids is not None:
                text = f"#{detections.track_ids[i]} {text}"
            left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
            shift = bottom - top + 2 if y1 - (bottom - top + 2) >= 0 else 0
            draw.rectangle([left, top - shift, right + 2, bottom - shift], fill=color)
            draw.text((x1 + 1, y1 - shift), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil).copy()


def save_overlay(path: str | Path, image: ImageSource, detections: Detections, **draw_kwargs: object) -> Path:
    """Draw ``detections`` on ``image`` (``draw_detections`` options as keywords) and save it; returns the path."""
    path = Path(path)
    Image.fromarray(draw_detections(image, detections, **draw_kwargs)).save(path)
    return path


def save_tracks_gif(path: str | Path, frames: Sequence[ImageSource], tracks: Tracks, fps: float = 10.0,
                    **draw_kwargs: object) -> Path:
    """An animated GIF of ``tracks`` drawn on ``frames`` (one colour per track id); returns the path."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if len(frames) != len(tracks):
        raise ValueError(f"{len(frames)} frames for tracks of {len(tracks)} frames")
    images = [Image.fromarray(draw_detections(frame, detections, **draw_kwargs))
              for frame, detections in zip(frames, tracks.frames)]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path
