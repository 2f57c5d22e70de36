"""The pydantic arguments and results of every tool; their field descriptions are what an LLM reads.

Coordinates are absolute pixels of the input image: boxes ``[x1, y1, x2, y2]`` (x to the right, y down),
points ``(x, y)``. Masks are COCO RLE (``{"size": [H, W], "counts": "<compressed string>"}``), decodable
with ``pycocotools.mask.decode``.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IMAGE_FIELD = ("The image: a handle from an earlier result (e.g. 'img_1'), a file path under the server's allowed "
               "folders, a 'data:image/png;base64,...' URL, or an http(s) URL if the server allows downloads.")
OBJECT_FIELD = ("Handle of an object from an earlier result (e.g. 'obj_3'), as listed in that result's 'objects'; "
                "the object stays in the image it was found in.")
MAX_SCHEMA_TEXT = 2000
"""Hard cap on any text field in the schema; the configurable ``Limits.max_text_chars`` is usually lower."""

NonEmpty = Annotated[str, Field(min_length=1)]
Phrase = Annotated[str, Field(min_length=1, max_length=MAX_SCHEMA_TEXT)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def exactly_one(model: BaseModel, *names: str) -> None:
    """Raise ``ValueError`` unless exactly one of the fields ``names`` is given (not None)."""
    given = [f"'{name}'" for name in names if getattr(model, name) is not None]
    if len(given) != 1:
        options = ", ".join(f"'{name}'" for name in names[:-1]) + f" and '{names[-1]}'"
        got = " and ".join(given) if given else "none of them"
        raise ValueError(f"give exactly one of {options}; got {got}")


class _ImageField(_Model):
    image: str = Field(min_length=1, description=IMAGE_FIELD)


class _ImagesField(_Model):
    """``image`` or ``images``: one image, or several answered together as a grouped result."""

    image: str | None = Field(None, min_length=1, description=IMAGE_FIELD + " Give this or 'images'.")
    images: list[NonEmpty] | None = Field(None, min_length=1, description="Several images (each given as 'image' "
                                          "is), answered in one call as a grouped result with one result per "
                                          "image, in this order. Give this or 'image'.")

    @model_validator(mode="after")
    def _one_image_field(self) -> "_ImagesField":
        exactly_one(self, "image", "images")
        return self

    @property
    def image_refs(self) -> list[str]:
        """The image references, in order (one for 'image')."""
        return [self.image] if self.images is None else list(self.images)

    @property
    def grouped(self) -> bool:
        """Whether the call asks for a grouped result ('images' given)."""
        return self.images is not None


class _ObjectField(_Model):
    object: str = Field(min_length=1, description=OBJECT_FIELD)


class _OverlayArgs(_Model):
    overlay: bool = Field(False, description="Also return a PNG with the objects drawn on the image.")
    overlay_style: Literal["boxes", "numbered"] = Field(
        "boxes", description="How the overlay (when asked for) is drawn. 'boxes': boxes, tinted masks and "
        "'id label score' captions. 'numbered': each object's outline (its mask, or its box for detect) with "
        "its number 1..N in the order of 'objects', to pick objects by number with select.")

    @property
    def overlay_kind(self) -> str | None:
        """The overlay to draw: None, 'boxes' or 'numbered'."""
        return self.overlay_style if self.overlay else None


class _ImageArgs(_OverlayArgs, _ImageField):
    """One image, plus the overlay options."""


class _ImagesArgs(_OverlayArgs, _ImagesField):
    """One image or several, plus the overlay options."""


class DetectArgs(_ImagesArgs):
    """Find every object of the given categories: labels, scores and boxes."""

    categories: list[str] = Field(min_length=1, description="Object categories to find, e.g. ['red circle', "
                                  "'square']; each name is an independent text prompt.")
    min_score: float = Field(0.3, ge=0.0, le=1.0, description="Drop objects scoring below this (0 to 1).")
    max_objects: int = Field(20, ge=1, description="Return at most this many objects, best first.")


class SegmentArgs(DetectArgs):
    """Like detect, plus a pixel mask per object."""


class ReferArgs(_ImagesArgs):
    """Find the one object a referring expression describes (per image and expression)."""

    expression: str | None = Field(None, min_length=1, max_length=MAX_SCHEMA_TEXT, description="A phrase naming "
                                   "one object, e.g. 'the small red circle left of the blue star'. Give this or "
                                   "'expressions'.")
    expressions: list[Phrase] | None = Field(None, min_length=1, description="Several phrases, each naming one "
                                             "object, answered in one call as a grouped result (one result per "
                                             "image and phrase). Give this or 'expression'.")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="Report no object if the best one scores below this.")

    @model_validator(mode="after")
    def _one_expression_field(self) -> "ReferArgs":
        exactly_one(self, "expression", "expressions")
        return self

    @property
    def texts(self) -> list[str]:
        """The referring expressions, in order (one for 'expression')."""
        return [self.expression] if self.expressions is None else list(self.expressions)

    @property
    def grouped(self) -> bool:
        """Whether the call asks for a grouped result ('images' or 'expressions' given)."""
        return self.images is not None or self.expressions is not None


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
    categories: list[str] | None = Field(None, description="Categories to track. Give exactly one of "
                                         "'categories', 'expression' and 'object'.")
    expression: str | None = Field(None, max_length=MAX_SCHEMA_TEXT, description="A phrase naming the one "
                                   "object to track. Give exactly one of 'categories', 'expression' and 'object'.")
    object: str | None = Field(None, min_length=1, description="Handle of an object with a mask (from segment, "
                               "refer, visual_prompt or refine, e.g. 'obj_3') to follow. Its image handle must be "
                               "one of 'frames': tracking starts at that frame and runs forward (online mode "
                               "only); frames before it are not tracked and have no objects. Give exactly one of "
                               "'categories', 'expression' and 'object'.")
    min_score: float = Field(0.3, ge=0.0, le=1.0, description="Drop per-frame objects scoring below this.")
    max_objects: int = Field(20, ge=1, description="At most this many objects per frame, best first.")
    mode: Literal["online", "official"] = Field("online", description="online: frame by frame with bounded memory; "
                                                "official: GLEE's own clip inference (top 30 tracks; not with "
                                                "'object').")

    @model_validator(mode="after")
    def _one_of_each(self) -> "TrackArgs":
        exactly_one(self, "frames", "video")
        exactly_one(self, "categories", "expression", "object")
        if self.object is not None and self.mode != "online":
            raise ValueError("tracking an 'object' runs in online mode only; leave 'mode' out or set it to 'online'")
        if self.object is not None and self.frames is None:
            raise ValueError("tracking an 'object' needs 'frames' that include the object's image handle "
                             "(e.g. ['img_1', ...]), not a 'video' folder")
        return self


class RefineArgs(_OverlayArgs, _ObjectField):
    """Segment an object found earlier again, prompted by its box and optional extra points."""

    points: list[Point] = Field(default_factory=list, description="Extra clicks in the object's image (pixels): "
                                "positive=true on a part the object must include (that part's segment is added "
                                "to the object), positive=false on background the refined object must not "
                                "cover.")


class CropArgs(_ObjectField):
    """Cut an object's box (plus a margin) out of its image as a new image."""

    padding: int = Field(8, ge=0, le=10_000, description="Margin around the object's box, pixels; the crop is "
                         "clipped to the image.")


class CompareArgs(_Model):
    """Measure how two objects of the same image relate: overlap, sizes, offset, relative position."""

    first: str = Field(min_length=1, description="Handle of the first object (e.g. 'obj_3').")
    second: str = Field(min_length=1, description="Handle of the second object, found in the same image.")


class DescribeArgs(_ObjectField):
    """Describe an object found earlier in words."""


class MaskRLE(_Model):
    size: list[int] = Field(description="[height, width] of the image.")
    counts: str = Field(description="COCO compressed RLE counts (column-major).")


class ObjectInfo(_Model):
    id: str | None = Field(None, description="Handle of this object for later calls (e.g. 'obj_4'); null in tracks.")
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
    match_probability: float | None = Field(None, description="refer on a calibrated server: the probability (0 "
                                            "to 1) that an object matching the expression is in the image; when "
                                            "it is too low, 'objects' is empty (no such object).")
    summary: str = Field(description="One-paragraph text summary of the result.")


class GroupedResult(_Model):
    tool: str = Field(description="The tool that made these results.")
    results: list[ImageResult] = Field(description="One result per image (and per expression for refer), images "
                                       "in the order given, and for each image its expressions in order: result "
                                       "k is image k // E with expression k % E, E expressions.")
    summary: str = Field(description="Text summary: one line per result.")


class CropResult(_Model):
    tool: Literal["crop"] = "crop"
    image: str = Field(description="Handle of the crop, a new image: boxes and points in later calls on it are in "
                       "the crop's own pixels (add 'offset' to get the source image's pixels).")
    source: str = Field(description="Handle of the image the crop was cut from.")
    object: str = Field(description="Handle of the cropped object (in the source image).")
    offset: list[int] = Field(description="[x, y] of the crop's top-left corner in the source image, pixels.")
    width: int = Field(description="Crop width, pixels.")
    height: int = Field(description="Crop height, pixels.")
    summary: str


class CompareResult(_Model):
    tool: Literal["compare"] = "compare"
    image: str = Field(description="Handle of the image both objects are in.")
    first: str = Field(description="Handle of the first object.")
    second: str = Field(description="Handle of the second object.")
    iou: float = Field(description="Intersection over union of the masks (of the boxes when either object has no "
                       "mask; see iou_of), 0 to 1.")
    iou_of: Literal["masks", "boxes"] = Field(description="What 'iou' and 'relation' were measured on.")
    box_iou: float = Field(description="Intersection over union of the two boxes, 0 to 1.")
    first_area: int = Field(description="Area of the first object, pixels (its mask, or its box without a mask).")
    second_area: int = Field(description="Area of the second object, pixels (its mask, or its box).")
    area_ratio: float | None = Field(description="first_area / second_area; null when the second area is 0.")
    dx: float = Field(description="x of the first box's centre minus x of the second's, pixels (negative: the "
                      "first object lies further left).")
    dy: float = Field(description="y of the first box's centre minus y of the second's, pixels (negative: the "
                      "first object lies higher up).")
    relation: Literal["inside", "contains", "overlapping", "left of", "right of", "above", "below"] = Field(
        description="Where the first object is relative to the second: 'inside' (at least 90% of the first lies "
        "within the second), 'contains' (the reverse), 'overlapping', else the main direction of the centre "
        "offset ('left of', 'right of', 'above', 'below').")
    summary: str


class DescribeResult(_Model):
    tool: Literal["describe"] = "describe"
    object: str = Field(description="Handle of the described object.")
    image: str = Field(description="Handle of the object's image.")
    label: str = Field(description="The object's label from the call that found it.")
    description: str = Field(description="The description in words.")
    summary: str


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
