"""``GleeToolkit``: the one typed core under every agent surface (langchain, MCP, OpenAI tool calling).

Each operation takes its pydantic arguments (:mod:`agents.schemas`), runs the predictor under the
configured :class:`~agents.settings.Limits` and :class:`~agents.settings.Access`, and returns a typed
result with a text summary. :meth:`GleeToolkit.call` is the surfaces' entry point: it takes a tool name and
raw arguments and never raises — every failure becomes a :class:`ToolOutcome` carrying a typed
:class:`~agents.errors.ToolError`, with the traceback only in the server log.

Calls run one at a time on a worker thread; one that outlives ``Limits.timeout_s`` is answered with a
``timeout`` error (a video stops at the next frame; an image call finishes in the background and its
result is dropped, and later calls wait for it).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from agents.errors import BadArgument, InternalError, Timeout, ToolError, TooLarge
from agents.handles import HandleStore
from agents.images import ImageResolver
from agents.results import (ObjectRecord, numbered_overlay_png, object_infos, overlay_png, record_info,
                            summarize_objects, summarize_selection, summarize_tracks, track_infos)
from agents.schemas import (DetectArgs, ImageResult, MaskRLE, ReferArgs, SegmentArgs, SelectArgs, SelectResult,
                            TrackArgs, TrackResult, VisualPromptArgs, describe_validation_error)
from agents.settings import Access, Limits
from glee_core.mask_ops import encode_rle
from glee_core.structures import Categories, Detections, Expression, VisualPrompt

logger = logging.getLogger("gleekit.agents")


@dataclass(frozen=True)
class ToolSpec:
    """A tool as every surface publishes it."""

    name: str
    description: str
    args_model: type[BaseModel]
    result_model: type[BaseModel]


TOOL_SPECS: dict[str, ToolSpec] = {spec.name: spec for spec in (
    ToolSpec("detect", "Find all objects of the given categories in an image: labels, scores and pixel boxes "
             "[x1, y1, x2, y2]. Use it to count or locate things.", DetectArgs, ImageResult),
    ToolSpec("segment", "Like detect, plus a pixel mask (COCO RLE) per object. Use it when shapes or areas "
             "matter.", SegmentArgs, ImageResult),
    ToolSpec("refer", "Find the single object a referring expression describes (e.g. 'the red circle left of the "
             "star'): its box, mask and score, or nothing if no object scores high enough.", ReferArgs, ImageResult),
    ToolSpec("visual_prompt", "Segment the object under each positive point or inside each box; negative points "
             "mark background the objects must not cover.", VisualPromptArgs, ImageResult),
    ToolSpec("track", "Track objects of given categories, or the one object a phrase describes, through a video "
             "(a list of frames or a folder of frame images): per-frame boxes and masks with stable track ids.",
             TrackArgs, TrackResult),
    ToolSpec("select", "Choose objects found earlier in an image by their handles (obj_N): returns them and the "
             "union of their masks (COCO RLE) as the answer. With a numbered overlay, number k is the k-th object "
             "of that result.", SelectArgs, SelectResult),
)}


def validate_arguments(args_model: type[BaseModel], arguments: Mapping[str, Any] | str | None) -> BaseModel:
    """Raw arguments (a mapping, a JSON object string or None) → ``args_model`` (``BadArgument`` on any problem)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            raise BadArgument("the arguments are not valid JSON") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise BadArgument(f"the arguments must be a JSON object, got {type(arguments).__name__}")
    try:
        return args_model.model_validate(dict(arguments))
    except ValidationError as error:
        raise BadArgument(describe_validation_error(error)) from None
    except RecursionError:
        raise BadArgument("the arguments are nested too deeply") from None


@dataclass
class ToolOutcome:
    """The answer to one tool call: a result or a typed error, plus the text a model reads."""

    tool: str
    text: str
    result: BaseModel | None = None
    error: ToolError | None = None
    overlay_png: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def structured(self) -> dict[str, Any]:
        """The full result as JSON-ready data (``{"error": {"type", "message"}}`` for a failure)."""
        return self.result.model_dump(mode="json") if self.result is not None else self.error.to_dict()


class GleeToolkit:
    """Detect, segment, refer, prompt, track and select with a ``GleePredictor``, as typed tools.

    Example::

        toolkit = GleeToolkit(allowed_roots=["~/pictures"])
        result = toolkit.segment(image="~/pictures/desk.jpg", categories=["mug", "laptop"])
        print(result.summary)
    """

    def __init__(self, predictor: Any = None, *, model: str | Path = "nano", limits: Limits | None = None,
                 allowed_roots: tuple[str | Path, ...] | list[str | Path] = (), allow_urls: bool = False):
        if predictor is None:
            from glee_core.predictor import GleePredictor

            predictor = GleePredictor.from_pretrained(model)
        self.predictor = predictor
        self.limits = limits or Limits()
        self.access = Access.of(allowed_roots, allow_urls)
        self.handles = HandleStore(self.limits.max_handles, self.limits.handle_ttl_s)
        self.images = ImageResolver(self.handles, self.limits, self.access)
        self.specs = dict(TOOL_SPECS)
        self._operations: dict[str, Callable[[Any, float], BaseModel]] = {
            "detect": self._detect, "segment": self._segment, "refer": self._refer,
            "visual_prompt": self._visual_prompt, "track": self._track, "select": self._select,
        }
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gleekit-tool")

    # ------------------------------------------------------------------ typed Python API (raises ToolError)
    def detect(self, **arguments: Any) -> ImageResult:
        return self._run("detect", arguments)[0]

    def segment(self, **arguments: Any) -> ImageResult:
        return self._run("segment", arguments)[0]

    def refer(self, **arguments: Any) -> ImageResult:
        return self._run("refer", arguments)[0]

    def visual_prompt(self, **arguments: Any) -> ImageResult:
        return self._run("visual_prompt", arguments)[0]

    def track(self, **arguments: Any) -> TrackResult:
        return self._run("track", arguments)[0]

    def select(self, **arguments: Any) -> SelectResult:
        return self._run("select", arguments)[0]

    def overlay(self, handle: str) -> bytes:
        """The PNG bytes of an overlay handle (``ovl_N``)."""
        return self.handles.get(handle, "ovl")

    def object(self, handle: str) -> ObjectRecord:
        """What an object handle (``obj_N``) stands for."""
        return self.handles.get(handle, "obj")

    # ------------------------------------------------------------------ the surfaces' entry point
    def call(self, tool: str, arguments: Mapping[str, Any] | str | None) -> ToolOutcome:
        """Run ``tool`` on raw ``arguments`` (a mapping or a JSON object string); never raises."""
        try:
            result, png = self._run(tool, arguments)
            return ToolOutcome(tool, result.summary, result=result, overlay_png=png)
        except ToolError as error:
            return ToolOutcome(tool, str(error), error=error)
        except Exception:  # noqa: BLE001 — the model sees a generic message, the log the details
            logger.exception("tool %r failed", tool)
            error = InternalError(f"the {tool!r} tool failed unexpectedly; the details are in the server log")
            return ToolOutcome(tool, str(error), error=error)

    def parse(self, tool: str, arguments: Mapping[str, Any] | str | None) -> BaseModel:
        """Validate raw arguments for ``tool`` into its args model (``BadArgument`` on any problem)."""
        if not isinstance(tool, str) or tool not in self.specs:
            raise BadArgument(f"unknown tool {str(tool)[:60]!r}; tools are {sorted(self.specs)}")
        return validate_arguments(self.specs[tool].args_model, arguments)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ internals
    def _run(self, tool: str, arguments: Any) -> tuple[BaseModel, bytes | None]:
        args = self.parse(tool, arguments)
        deadline = time.monotonic() + self.limits.timeout_s
        future = self._worker.submit(self._operations[tool], args, deadline)
        try:
            result = future.result(timeout=self.limits.timeout_s)
        except FutureTimeout:
            raise Timeout(f"the {tool!r} call took longer than {self.limits.timeout_s:g} s; try a smaller image, "
                          "fewer categories or fewer frames") from None
        png = self.overlay(result.overlay) if isinstance(result, ImageResult) and result.overlay else None
        return result, png

    def _check_texts(self, texts: list[str], what: str) -> None:
        for text in texts:
            if len(text) > self.limits.max_text_chars:
                raise TooLarge(f"a {what} has {len(text)} characters; at most {self.limits.max_text_chars}")

    def _categories(self, names: list[str]) -> Categories:
        if len(names) > self.limits.max_categories:
            raise TooLarge(f"{len(names)} categories in one call; at most {self.limits.max_categories}")
        self._check_texts(names, "category name")
        try:
            return Categories(names)
        except ValueError as error:
            raise BadArgument(str(error)) from None

    def _expression(self, text: str) -> Expression:
        self._check_texts([text], "referring expression")
        try:
            return Expression(text)
        except ValueError as error:
            raise BadArgument(str(error)) from None

    def _predict(self, image: np.ndarray, prompt: Any, **kwargs: Any) -> Detections:
        try:
            return self.predictor.predict(image, prompt, **kwargs)
        except ValueError as error:  # the predictor validates prompts against the image
            raise BadArgument(str(error)) from None

    def _image_result(self, tool: str, handle: str, image: np.ndarray, detections: Detections, max_objects: int,
                      with_masks: bool, overlay: str | None, nothing: str) -> ImageResult:
        num_found = len(detections)
        detections = detections.topk(min(max_objects, self.limits.max_objects))
        infos = object_infos(detections, with_masks)
        ids = [self.handles.add("obj", ObjectRecord(handle, o.label, o.score, tuple(o.box), o.mask)) for o in infos]
        infos = [info.model_copy(update={"id": i}) for info, i in zip(infos, ids)]
        overlay_handle = None
        if overlay is not None:
            shown = detections if with_masks else replace(detections, masks=None)
            png = numbered_overlay_png(image, shown) if overlay == "numbered" else \
                overlay_png(image, shown, names=[f"{o.id} {o.label} {o.score:.2f}" for o in infos])
            overlay_handle = self.handles.add("ovl", png)
        height, width = image.shape[:2]
        where = f"{handle} ({width}x{height})"
        return ImageResult(tool=tool, image=handle, width=width, height=height, objects=infos, num_found=num_found,
                           overlay=overlay_handle, summary=summarize_objects(where, infos, num_found, nothing))

    def _detect(self, args: DetectArgs, deadline: float, with_masks: bool = False) -> ImageResult:
        prompt = self._categories(args.categories)
        handle, image = self.images.image(args.image)
        detections = self._predict(image, prompt, score_threshold=args.min_score)
        nothing = f"No {', '.join(map(repr, prompt.names[:5]))}{' …' if len(prompt) > 5 else ''} " \
                  f"with score >= {args.min_score:.2f}"
        return self._image_result("segment" if with_masks else "detect", handle, image, detections,
                                  args.max_objects, with_masks, args.overlay_kind, nothing)

    def _segment(self, args: SegmentArgs, deadline: float) -> ImageResult:
        return self._detect(args, deadline, with_masks=True)

    def _refer(self, args: ReferArgs, deadline: float) -> ImageResult:
        prompt = self._expression(args.expression)
        handle, image = self.images.image(args.image)
        detections = self._predict(image, prompt)
        best = float(detections.scores[0]) if len(detections) else 0.0
        nothing = f"No object matches {args.expression!r} with score >= {args.min_score:.2f} (best {best:.2f})"
        return self._image_result("refer", handle, image, detections.filter(min_score=args.min_score), 1, True,
                                  args.overlay_kind, nothing)

    def _visual_prompt(self, args: VisualPromptArgs, deadline: float) -> ImageResult:
        if len(args.points) + len(args.boxes) > self.limits.max_prompts:
            raise TooLarge(f"{len(args.points) + len(args.boxes)} points and boxes in one call; "
                           f"at most {self.limits.max_prompts}")
        handle, image = self.images.image(args.image)
        try:
            prompt = VisualPrompt(
                boxes=[[b.x1, b.y1, b.x2, b.y2] for b in args.boxes] or None,
                points=[[p.x, p.y] for p in args.points] or None,
                point_labels=[int(p.positive) for p in args.points] or None,
            )
        except ValueError as error:
            raise BadArgument(str(error)) from None
        detections = self._predict(image, prompt)
        # The predictor labels prompts "prompt i" in the order boxes, then positive points.
        names = [f"box {i}" for i in range(len(args.boxes))]
        names += [f"point {i}" for i, p in enumerate(args.points) if p.positive]
        detections = replace(detections, label_names=names)
        return self._image_result("visual_prompt", handle, image, detections, self.limits.max_objects, True,
                                  args.overlay_kind, "No object found under the prompts")

    def _select(self, args: SelectArgs, deadline: float) -> SelectResult:
        ids = list(dict.fromkeys(handle.strip() for handle in args.ids))
        if len(ids) > self.limits.max_objects:
            raise TooLarge(f"{len(ids)} objects in one selection; at most {self.limits.max_objects}")
        handle = args.image.strip()
        image = self.handles.get(handle, "img")
        chosen = []
        for object_id in ids:
            record = self.object(object_id)
            if record.image != handle:
                raise BadArgument(f"{object_id!r} was found in {record.image}, not in {handle}; select objects of "
                                  "the one image")
            if record.mask is None:
                raise BadArgument(f"{object_id!r} has no mask (it came from detect); segment or refer to it first")
            chosen.append(record_info(object_id, record))
        union = np.logical_or.reduce([mask for _, mask in chosen])
        rle, area = encode_rle(union), int(np.count_nonzero(union))
        infos = [info for info, _ in chosen]
        height, width = image.shape[:2]
        return SelectResult(image=handle, width=width, height=height, objects=infos, area=area,
                            mask=MaskRLE(size=rle["size"], counts=rle["counts"]),
                            summary=summarize_selection(f"{handle} ({width}x{height})", infos, area))

    def _track(self, args: TrackArgs, deadline: float) -> TrackResult:
        prompt = self._categories(args.categories) if args.categories is not None else self._expression(args.expression)
        refs = args.frames if args.frames is not None else [str(p) for p in self.images.folder_frames(args.video)]
        if len(refs) > self.limits.max_video_frames:
            raise TooLarge(f"{len(refs)} frames; at most {self.limits.max_video_frames}")
        if not refs:
            raise BadArgument("the video has no frames")
        frames = [self.images.pixels(ref) for ref in refs]
        if len({f.shape for f in frames}) != 1:
            raise BadArgument("all frames of a video must have the same size")

        def check_deadline(frame: int) -> None:
            if time.monotonic() > deadline:
                raise Timeout(f"tracking stopped at frame {frame} of {len(frames)} after {self.limits.timeout_s:g} s; "
                              "send fewer or smaller frames")

        try:
            tracks = self.predictor.track(frames, prompt, mode=args.mode, score_threshold=args.min_score,
                                          on_frame=check_deadline)
        except ValueError as error:
            raise BadArgument(str(error)) from None
        per_frame = [object_infos(f.topk(min(args.max_objects, self.limits.max_objects)), True) for f in tracks.frames]
        infos = track_infos(tracks)
        size = frames[0].shape[:2]
        return TrackResult(num_frames=len(frames), width=size[1], height=size[0], tracks=infos, frames=per_frame,
                           summary=summarize_tracks(infos, len(frames), size))
