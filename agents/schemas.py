"""The pydantic arguments and results of every tool; their field descriptions are what an LLM reads.

Coordinates are absolute pixels of the input image: boxes ``[x1, y1, x2, y2]`` (x to the right, y down),
points ``(x, y)``. Masks are COCO RLE (``{"size": [H, W], "counts": "<compressed string>"}``), decodable
with ``pycocotools.mask.decode``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IMAGE_FIELD = ("The image: a handle from an earlier result (e.g. 'img_1'), a file path under the server's allowed "
               "folders, a 'data:image/png;base64,...' URL, or an http(s) URL if the server allows downloads.")
MAX_SCHEMA_TEXT = 2000
"""Hard cap on any text field in the schema; the configurable ``Limits.max_text_chars`` is usually lower."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _ImageArgs(_Model):
    image: str = Field(min_length=1, description=IMAGE_FIELD)
    overlay: bool = Field(False, description="Also return a PNG with the objects drawn on the image.")
    overlay_style: Literal["boxes", "numbered"] = Field(
        "boxes", description="How the overlay (when asked for) is drawn. 'boxes': boxes, tinted masks and "
        "'id label score' captions. 'numbered': each object's outline (its mask, or its box for detect) with "
        "its number 1..N in the order of 'objects', to pick objects by number with select.")

    @property
    def overlay_kind(self) -> str | None:
        """The overlay to draw: None, 'boxes' or 'numbered'."""
        return self.overlay_style if self.overlay else None


class DetectArgs(_ImageArgs):
    """Find every object of the given categories: labels, scores and boxes."""

    categories: list[str] = Field(min_length=1, description="Object categories to find, e.g. ['red circle', "
                                  "'square']; each name is an independent text prompt.")
    min_score: float = Field(0.3, ge=0.0, le=1.0, description="Drop objects scoring below this (0 to 1).")
    max_objects: int = Field(20, ge=1, description="Return at most this many objects, best first.")


class SegmentArgs(DetectArgs):
    """Like detect, plus a pixel mask per object."""


class ReferArgs(_ImageArgs):
    """Find the one object a referring expression describes."""

    expression: str = Field(min_length=1, max_length=MAX_SCHEMA_TEXT, description="A phrase naming one object, "
                            "e.g. 'the small red circle left of the blue star'.")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="Report no object if the best one scores below this.")


class SelectArgs(_Model):
    """Choose objects found earlier in one image; the answer is the union of their masks."""

    image: str = Field(min_length=1, description="Handle of the image the objects were found in (e.g. 'img_1').")
    ids: list[str] = Field(min_length=1, description="Handles of the chosen objects (e.g. ['obj_3', 'obj_5']) "
                           "from earlier segment, refer or visual_prompt results on this image (detect objects "
                           "have no mask).")


class Point(_Model):
    x: float = Field(description="Pixels from the left edge.")
    y: float = Field(description="Pixels from the top edge.")
    positive: bool = Field(True, description="True: the object under this point is wanted. False: a background "
                           "point; returned objects must not cover it.")


class Box(_Model):
    x1: float = Field(description="Left edge, pixels.")
    y1: float = Field(description="Top edge, pixels.")
    x2: float = Field(description="Right edge, pixels (> x1).")
    y2: float = Field(description="Bottom edge, pixels (> y1).")


class VisualPromptArgs(_ImageArgs):
    """Segment the objects under points or inside boxes (one object per positive point or box)."""

    points: list[Point] = Field(default_factory=list, description="Points on objects (positive) or on "
                                "background to exclude (positive=false).")
    boxes: list[Box] = Field(default_factory=list, description="Boxes around objects, one object each.")

    @model_validator(mode="after")
    def _needs_a_prompt(self) -> "VisualPromptArgs":
        if not self.boxes and not any(p.positive for p in self.points):
            raise ValueError("give at least one box or one positive point")
        return self


class TrackArgs(_Model):
    """Follow objects through a video: per-frame objects with stable track ids."""

    frames: list[str] | None = Field(None, description="The video as a list of frame images (handles, paths "
                                     "or data URLs), in order. Give this or 'video'.")
    video: str | None = Field(None, description="A folder of frame images under the allowed folders, read in "
                              "name order. Give this or 'frames'.")
    categories: list[str] | None = Field(None, description="Categories to track. Give this or 'expression'.")
    expression: str | None = Field(None, max_length=MAX_SCHEMA_TEXT, description="A phrase naming the one "
                                   "object to track. Give this or 'categories'.")
    min_score: float = Field(0.3, ge=0.0, le=1.0, description="Drop per-frame objects scoring below this.")
    max_objects: int = Field(20, ge=1, description="At most this many objects per frame, best first.")
    mode: Literal["online", "official"] = Field("online", description="online: frame by frame with bounded memory; "
                                                "official: GLEE's own clip inference (top 30 tracks).")

    @model_validator(mode="after")
    def _one_of_each(self) -> "TrackArgs":
        if (self.frames is None) == (self.video is None):
            raise ValueError("give exactly one of 'frames' and 'video'")
        if (self.categories is None) == (self.expression is None):
            raise ValueError("give exactly one of 'categories' and 'expression'")
        return self


class MaskRLE(_Model):
    size: list[int] = Field(description="[height, width] of the image.")
    counts: str = Field(description="COCO compressed RLE counts (column-major).")


class ObjectInfo(_Model):
    id: str | None = Field(description="Handle of this object for later calls (e.g. 'obj_4'); null in tracks.")
    label: str = Field(description="The category, expression or prompt that found it.")
    score: float = Field(description="Confidence, 0 to 1.")
    box: list[float] = Field(description="[x1, y1, x2, y2] in pixels, clipped to the image.")
    area: int = Field(description="Mask area in pixels (box area when no mask was asked for).")
    mask: MaskRLE | None = Field(None, description="The pixel mask as COCO RLE; null for detect.")
    track_id: int | None = Field(None, description="Stable id of the object through a video (track only).")


class ImageResult(_Model):
    tool: str = Field(description="The tool that made this result.")
    image: str = Field(description="Handle of the input image, reusable in later calls.")
    width: int
    height: int
    objects: list[ObjectInfo] = Field(description="Found objects, best first.")
    num_found: int = Field(description="Objects found before the max_objects cut.")
    overlay: str | None = Field(None, description="Handle of the overlay PNG, when asked for.")
    summary: str = Field(description="One-paragraph text summary of the result.")


class SelectResult(_Model):
    tool: Literal["select"] = "select"
    image: str = Field(description="Handle of the image.")
    width: int
    height: int
    objects: list[ObjectInfo] = Field(description="The chosen objects, in the order given.")
    mask: MaskRLE = Field(description="The union of the chosen objects' masks as COCO RLE.")
    area: int = Field(description="Pixels in the union mask.")
    summary: str = Field(description="One-line text summary of the selection.")


class TrackInfo(_Model):
    track_id: int
    label: str
    first_frame: int
    last_frame: int
    num_frames: int = Field(description="Frames in which the object was found.")
    mean_score: float


class TrackResult(_Model):
    tool: Literal["track"] = "track"
    num_frames: int
    width: int
    height: int
    tracks: list[TrackInfo] = Field(description="One summary per track id.")
    frames: list[list[ObjectInfo]] = Field(description="Objects of each frame, with track_id.")
    summary: str


def describe_validation_error(error: ValidationError, limit: int = 5) -> str:
    """A short, model-readable account of what is wrong with the arguments (no input values echoed)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
