"""Numbered overlays for a model to pick objects by number: mask outlines and labels 1..N.

Each object's mask is outlined (not filled, so the object itself stays visible) in a colour of the
colour-blind-safe Okabe–Ito palette, cycled, over a 1-pixel contrasting halo; its number sits in a filled
label box of the same colour with black or white digits, near a corner of the object's bounding box
(the first corner where it does not cover an earlier label). Object 1 is drawn on top.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_dilation, binary_erosion

OKABE_ITO: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
    (0, 114, 178), (213, 94, 0), (204, 121, 167), (0, 0, 0),
)
"""Orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple, black (RGB)."""

_SQUARE = np.ones((3, 3), dtype=bool)


def palette_color(index: int) -> tuple[int, int, int]:
    """The RGB colour of the object at 0-based ``index`` (the palette cycles)."""
    return OKABE_ITO[index % len(OKABE_ITO)]


def contrast_color(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``color``."""
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luminance >= 128 else (255, 255, 255)


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """bool [H, W]: the pixels of ``mask`` ([H, W] bool) within ``width`` pixels of its edge (image edge included)."""
    return mask & ~binary_erosion(mask, structure=_SQUARE, iterations=width, border_value=0)


def box_masks(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """bool [N, H, W] filled rectangles for [N, 4] xyxy pixel boxes (edges rounded outwards)."""
    height, width = image_size
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        mask[max(0, int(np.floor(y1))):int(np.ceil(y2)), max(0, int(np.floor(x1))):int(np.ceil(x2))] = True
    return masks


def draw_numbered(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: ``image`` (uint8 [H, W, 3]) with ``masks`` ([N, H, W] bool) outlined and numbered 1..N.

    Sizes scale with the image: outlines are ``max(2, min(H, W) // 200)`` pixels wide, the label font is
    ``max(13, min(H, W) // 24)`` pixels. Empty masks get neither outline nor label.
    """
    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks are {masks.shape[1:]} but the image is {image.shape[:2]}")
    height, width = image.shape[:2]
    line = max(2, min(height, width) // 200)
    canvas = image.copy()
    order = [i for i in range(len(masks)) if masks[i].any()]
    for i in reversed(order):  # object 1 is drawn last, on top
        ring = binary_dilation(masks[i], structure=_SQUARE) & ~masks[i]
        canvas[ring] = contrast_color(palette_color(i))
    for i in reversed(order):
        canvas[outline(masks[i], line)] = palette_color(i)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    font = _font(max(13, min(height, width) // 24))
    labels: list[tuple[tuple[int, int, int, int], tuple[int, int]]] = []
    for i in order:  # object 1 gets the first choice of corner
        labels.append(_place_label(draw, font, str(i + 1), masks[i], (height, width), [box for box, _ in labels]))
    for i, ((left, top, right, bottom), text_xy) in reversed(list(zip(order, labels))):
        color = palette_color(i)
        draw.rectangle([left, top, right - 1, bottom - 1], fill=color, outline=contrast_color(color))
        draw.text(text_xy, str(i + 1), fill=contrast_color(color), font=font)
    return np.asarray(pil).copy()


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _place_label(draw: ImageDraw.ImageDraw, font, text: str, mask: np.ndarray, image_size: tuple[int, int],
                 placed: list[tuple[int, int, int, int]]) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The label box (left, top, right, bottom), centred on a corner of the mask's bounding box and kept
    inside the image, and where its text starts."""
    height, width = image_size
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 4)
    box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
    ys, xs = np.nonzero(mask)
    corners = [(x, y) for y in (ys.min(), ys.max() + 1) for x in (xs.min(), xs.max() + 1)]
    boxes = []
    for x, y in corners:
        x0 = int(min(max(x - box_w // 2, 0), max(width - box_w, 0)))
        y0 = int(min(max(y - box_h // 2, 0), max(height - box_h, 0)))
        boxes.append((x0, y0, x0 + box_w, y0 + box_h))
    free = [b for b in boxes if not any(_overlap(b, other) for other in placed)]
    chosen = (free or boxes)[0]
    return chosen, (chosen[0] + pad - left, chosen[1] + pad - top)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
