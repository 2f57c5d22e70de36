"""``GleeToolkit``: the one typed core under every agent surface (langchain, MCP, OpenAI tool calling).

Each operation takes its pydantic arguments (:mod:`agents.schemas`), runs the predictor under the
configured :class:`~agents.settings.Limits` and :class:`~agents.settings.Access`, and returns a typed
result with a text summary. Results name images and objects by handles (``img_N``, ``obj_N``) that later
calls of the same toolkit accept, whichever surface made them: refine, crop, compare, describe and track
work on objects found earlier. detect, segment and refer also take several images (and refer several
expressions) in one call, batched underneath, and answer with a :class:`~agents.schemas.GroupedResult`.
:meth:`GleeToolkit.call` is the surfaces' entry point: it takes a tool name and raw arguments and never
raises — every failure becomes a :class:`ToolOutcome` carrying a typed :class:`~agents.errors.ToolError`, with
the traceback only in the server log.

Calls run one at a time on a worker thread; one that outlives ``Limits.timeout_s`` is answered with a
``timeout`` error (a video stops at the next frame; an image call finishes in the background and its
result is dropped, and later calls wait for it).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

from agents.errors import BadArgument, InternalError, NotFound, Timeout, ToolError, TooLarge
from agents.handles import HandleStore
from agents.images import ImageResolver
from agents.results import (ObjectRecord, compare_records, crop_window, numbered_overlay_png, object_infos,
                            overlay_png, record_info, summarize_comparison, summarize_groups, summarize_objects,
                            summarize_selection, summarize_tracks, track_infos)
from agents.schemas import (CompareArgs, CompareResult, CropArgs, CropResult, DescribeArgs, DescribeResult,
                            DetectArgs, GroupedResult, ImageResult, MaskRLE, Point, ReferArgs, RefineArgs, SegmentArgs,
                            SelectArgs, SelectResult, TrackArgs, TrackResult, VisualPromptArgs,
                            describe_validation_error)
from agents.settings import Access, Limits
from glee_core.mask_ops import decode_rle, encode_rle
from glee_core.rejection import RejectionCalibrator
from glee_core.structures import Categories, Detections, Expression, Tracks, VisualPrompt

logger = logging.getLogger("gleekit.agents")


Describer = Callable[[np.ndarray, ObjectRecord], str]
"""Describes one object in words: gets the uint8 [H, W, 3] RGB image the object was found in and its record
(box xyxy in that image's absolute pixels, label, score, COCO RLE mask or None)."""
MAX_DESCRIPTION_CHARS = 4000
"""Longer descriptions from a describer are cut to this many characters."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool as every surface publishes it; ``result_model`` is a model class or a union of them."""

    name: str
    description: str
    args_model: type[BaseModel]
    result_model: Any

    def output_schema(self) -> dict[str, Any]:
        """The JSON schema of the result (an object schema; a union becomes ``anyOf`` its models)."""
        schema = TypeAdapter(self.result_model).json_schema()
        schema.setdefault("type", "object")
        return schema


GROUPED = ("With 'images' instead of 'image' (and for refer 'expressions' instead of 'expression') one call "
           "answers many, as a grouped result: one result per image (and expression).")
TOOL_SPECS: dict[str, ToolSpec] = {spec.name: spec for spec in (
    ToolSpec("detect", "Find all objects of the given categories in an image: labels, scores and pixel boxes "
             f"[x1, y1, x2, y2]. Use it to count or locate things. {GROUPED}", DetectArgs,
             ImageResult | GroupedResult),
    ToolSpec("segment", "Like detect, plus a pixel mask (COCO RLE) per object. Use it when shapes or areas "
             f"matter. {GROUPED}", SegmentArgs, ImageResult | GroupedResult),
    ToolSpec("refer", "Find the single object a referring expression describes (e.g. 'the red circle left of the "
             f"star'): its box, mask and score, or nothing if no object scores high enough. {GROUPED}", ReferArgs,
             ImageResult | GroupedResult),
    ToolSpec("visual_prompt", "Segment the object under each positive point or inside each box; negative points "
             "mark background the objects must not cover.", VisualPromptArgs, ImageResult),
    ToolSpec("track", "Track objects of given categories, the one object a phrase describes, or an object found "
             "earlier (its handle, from its frame on) through a video (a list of frames or a folder of frame "
             "images): per-frame boxes and masks with stable track ids.", TrackArgs, TrackResult),
    ToolSpec("select", "Choose objects found earlier in an image by their handles (obj_N): returns them and the "
             "union of their masks (COCO RLE) as the answer. With a numbered overlay, number k is the k-th object "
             "of that result.", SelectArgs, SelectResult),
    ToolSpec("refine", "Segment an object found earlier (obj_N) again, prompted by its box, optionally with extra "
             "points: positive ones add parts, negative ones mark background to leave out. Returns the refined "
             "object under a new handle.", RefineArgs, ImageResult),
    ToolSpec("crop", "Cut an object found earlier (obj_N) out of its image, with a margin, as a new image handle "
             "for closer looks (detect, segment, refer, ... on it). Results on the crop are in the crop's own "
             "pixels: add its offset [x, y] to get source-image pixels.", CropArgs, CropResult),
    ToolSpec("compare", "Compare two objects found earlier in the same image: mask IoU, box IoU, areas, centre "
             "offset in pixels and their relative position ('left of', 'above', 'inside', 'overlapping', ...).",
             CompareArgs, CompareResult),
)}
DESCRIBE_SPEC = ToolSpec("describe", "Describe an object found earlier (obj_N) in words: what it is and how it "
                         "looks.", DescribeArgs, DescribeResult)
"""Published only by a toolkit given a ``describer``."""


def _referring_calibrator(rejection: RejectionCalibrator | str | Path | None) -> RejectionCalibrator | None:
    """The calibrator of ``GleeToolkit(rejection=...)``, loaded from its file when given a path; it must have been
    fit for referring expressions."""
    if rejection is None:
        return None
    calibrator = rejection if isinstance(rejection, RejectionCalibrator) else RejectionCalibrator.load(rejection)
    if calibrator.prompt != "referring":
        raise ValueError(f"the refer tool needs a calibration fit for referring expressions, got one for "
                         f"{calibrator.prompt!r} prompts (gleekit eval calibrate-refer --prompt referring)")
    return calibrator


@contextlib.contextmanager
def _as_bad_argument() -> Iterator[None]:
    """A ``ValueError`` inside (a prompt or an image the library refuses, with its reason) becomes ``BadArgument``."""
    try:
        yield
    except ValueError as error:
        raise BadArgument(str(error)) from None


def parse_json_arguments(text: str) -> Any:
    """Tool-call arguments sent as JSON text → their value (``{}`` for blank text; ``BadArgument`` if not JSON)."""
    try:
        return json.loads(text) if text.strip() else {}
    except (json.JSONDecodeError, RecursionError):
        raise BadArgument("the arguments are not valid JSON") from None


def validate_arguments(args_model: type[BaseModel], arguments: Mapping[str, Any] | str | None) -> BaseModel:
    """Raw arguments (a mapping, a JSON object string or None) → ``args_model`` (``BadArgument`` on any problem)."""
    if isinstance(arguments, str):
        arguments = parse_json_arguments(arguments)
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
    overlays: tuple[bytes, ...] = field(default=(), repr=False)
    """The PNG of every overlay the result names (one per image result of a grouped call)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def overlay_png(self) -> bytes | None:
        """The overlay of a one-image result (None for no overlay or a grouped result)."""
        return self.overlays[0] if isinstance(self.result, ImageResult) and self.overlays else None

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
                 allowed_roots: tuple[str | Path, ...] | list[str | Path] = (), allow_urls: bool = False,
                 describer: Describer | None = None, rejection: RejectionCalibrator | str | Path | None = None):
        """``describer``: optional ``(image, record) -> text`` (see :data:`Describer`); only with one is the
        ``describe`` tool published. ``rejection``: a referring :class:`~glee_core.rejection.RejectionCalibrator`
        (or its JSON file, from ``gleekit eval calibrate-refer`` on this model): refer results then carry the
        calibrated ``match_probability`` and report no object when it is below the calibration's threshold;
        with a ``model`` loaded by name or folder, a calibration fit for other weights is refused (ValueError)."""
        self.rejection = _referring_calibrator(rejection)
        if predictor is None:
            from glee_core.checkpoint import weights_sha256
            from glee_core.modeling.glee import bundled_model_dir
            from glee_core.predictor import GleePredictor

            predictor = GleePredictor.from_pretrained(model)
            folder = Path(model) if Path(model).exists() else bundled_model_dir(str(model))
            if self.rejection is not None and folder is not None:
                self.rejection.check_model(weights_sha256([folder]))
        self.predictor = predictor
        self.limits = limits or Limits()
        self.access = Access.of(allowed_roots, allow_urls)
        self.handles = HandleStore(self.limits.max_handles, self.limits.handle_ttl_s)
        self.images = ImageResolver(self.handles, self.limits, self.access)
        self.describer = describer
        self.specs = dict(TOOL_SPECS)
        self._operations: dict[str, Callable[[Any, float], BaseModel]] = {
            "detect": self._detect, "segment": self._segment, "refer": self._refer,
            "visual_prompt": self._visual_prompt, "track": self._track, "select": self._select,
            "refine": self._refine, "crop": self._crop, "compare": self._compare,
        }
        if describer is not None:
            self.specs[DESCRIBE_SPEC.name] = DESCRIBE_SPEC
            self._operations[DESCRIBE_SPEC.name] = self._describe
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gleekit-tool")

    # ------------------------------------------------------------------ typed Python API (raises ToolError)
    def detect(self, **arguments: Any) -> ImageResult | GroupedResult:
        return self._run("detect", arguments)

    def segment(self, **arguments: Any) -> ImageResult | GroupedResult:
        return self._run("segment", arguments)

    def refer(self, **arguments: Any) -> ImageResult | GroupedResult:
        return self._run("refer", arguments)

    def visual_prompt(self, **arguments: Any) -> ImageResult:
        return self._run("visual_prompt", arguments)

    def track(self, **arguments: Any) -> TrackResult:
        return self._run("track", arguments)

    def select(self, **arguments: Any) -> SelectResult:
        return self._run("select", arguments)

    def refine(self, **arguments: Any) -> ImageResult:
        return self._run("refine", arguments)

    def crop(self, **arguments: Any) -> CropResult:
        return self._run("crop", arguments)

    def compare(self, **arguments: Any) -> CompareResult:
        return self._run("compare", arguments)

    def describe(self, **arguments: Any) -> DescribeResult:
        """Only with a ``describer`` (else a ``bad_argument`` error)."""
        return self._run("describe", arguments)

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
            result = self._run(tool, arguments)
            return ToolOutcome(tool, result.summary, result=result, overlays=self._overlays(result))
        except ToolError as error:
            return ToolOutcome(tool, str(error), error=error)
        except Exception:  # noqa: BLE001 — the model sees a generic message, the log the details
            logger.exception("tool %r failed", tool)
            error = InternalError(f"the {tool!r} tool failed unexpectedly; the details are in the server log")
            return ToolOutcome(tool, str(error), error=error)

    def parse(self, tool: str, arguments: Mapping[str, Any] | str | None) -> BaseModel:
        """Validate raw arguments for ``tool`` into its args model (``BadArgument`` on any problem)."""
        if tool == DESCRIBE_SPEC.name and tool not in self.specs:
            raise BadArgument("the describe tool is not available here (the toolkit has no describer, see "
                              f"GleeToolkit(describer=...)); tools are {sorted(self.specs)}")
        if not isinstance(tool, str) or tool not in self.specs:
            raise BadArgument(f"unknown tool {str(tool)[:60]!r}; tools are {sorted(self.specs)}")
        return validate_arguments(self.specs[tool].args_model, arguments)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ internals
    def _run(self, tool: str, arguments: Any) -> BaseModel:
        args = self.parse(tool, arguments)
        deadline = time.monotonic() + self.limits.timeout_s
        future = self._worker.submit(self._operations[tool], args, deadline)
        try:
            result = future.result(timeout=self.limits.timeout_s)
        except FutureTimeout:
            future.cancel()  # a call still queued behind a slow one never runs
            raise Timeout(f"the {tool!r} call took longer than {self.limits.timeout_s:g} s; try a smaller image, "
                          "fewer categories or fewer frames") from None
        return result

    def _overlays(self, result: BaseModel) -> tuple[bytes, ...]:
        """The PNGs of the overlays ``result`` names: its own, or each of a grouped result's."""
        results = result.results if isinstance(result, GroupedResult) else [result]
        return tuple(self.overlay(r.overlay) for r in results if isinstance(r, ImageResult) and r.overlay)

    def _check_texts(self, texts: list[str], what: str) -> None:
        for text in texts:
            if len(text) > self.limits.max_text_chars:
                raise TooLarge(f"a {what} has {len(text)} characters; at most {self.limits.max_text_chars}")

    def _categories(self, names: list[str]) -> Categories:
        if len(names) > self.limits.max_categories:
            raise TooLarge(f"{len(names)} categories in one call; at most {self.limits.max_categories}")
        self._check_texts(names, "category name")
        with _as_bad_argument():
            return Categories(names)

    def _expression(self, text: str) -> Expression:
        self._check_texts([text], "referring expression")
        with _as_bad_argument():
            return Expression(text)

    def _predict(self, image: np.ndarray, prompt: Any, **kwargs: Any) -> Detections:
        with _as_bad_argument():  # the predictor validates prompts against the image
            return self.predictor.predict(image, prompt, **kwargs)

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

    def _check_handle_budget(self, images: int, per_image: int) -> None:
        """Refuse a call whose handles (an image handle + ``per_image`` object/overlay handles per image) could
        exceed the store: it would evict the call's own first handles."""
        most = images * (1 + per_image)
        if most > self.limits.max_handles:
            raise TooLarge(f"this call can make {most} handles (images, objects, overlays) but a session keeps "
                           f"{self.limits.max_handles}: lower max_objects, or send fewer images or expressions")

    def _load_images(self, refs: list[str]) -> list[tuple[str, np.ndarray]]:
        """(handle, pixels) per image reference, in order (at most ``Limits.max_batch_images``)."""
        if len(refs) > self.limits.max_batch_images:
            raise TooLarge(f"{len(refs)} images in one call; at most {self.limits.max_batch_images}")
        return [self.images.image(ref) for ref in refs]

    def _stopper(self, deadline: float, what: str, advice: str, total: int | None = None) -> Callable[[int], None]:
        """A progress callback (step index in) that raises ``Timeout`` once ``deadline`` has passed:
        "<what> <step> of <total> after <timeout> s; <advice>"."""
        def check(step: int) -> None:
            if time.monotonic() > deadline:
                of = f" of {total}" if total is not None else ""
                raise Timeout(f"{what} {step}{of} after {self.limits.timeout_s:g} s; {advice}")
        return check

    def _predict_images(self, images: list[np.ndarray], prompt: Categories, deadline: float,
                        **kwargs: Any) -> list[Detections]:
        """One ``Detections`` per image: a lone image as ever, several in batches of the predictor's
        ``batch_groups`` (same padded input size, so each equals its one-image result)."""
        if len(images) == 1:
            return [self._predict(images[0], prompt, **kwargs)]
        check = self._stopper(deadline, "stopped at batch", "send fewer or smaller images")
        if not hasattr(self.predictor, "predict_each"):  # any predictor with predict() still works, one by one
            results = []
            for k, image in enumerate(images):
                check(k)
                results.append(self._predict(image, prompt, **kwargs))
            return results
        with _as_bad_argument():
            return self.predictor.predict_each(images, prompt, on_batch=check, **kwargs)

    def _grouped(self, tool: str, args: DetectArgs | ReferArgs, results: list[ImageResult],
                 num_expressions: int = 1) -> ImageResult | GroupedResult:
        """The one result of a plain call, or all of them as a ``GroupedResult``."""
        if not args.grouped:
            return results[0]
        return GroupedResult(tool=tool, results=results,
                             summary=summarize_groups(results, len(results) // num_expressions, num_expressions))

    def _detect(self, args: DetectArgs, deadline: float, with_masks: bool = False) -> ImageResult | GroupedResult:
        tool = "segment" if with_masks else "detect"
        prompt = self._categories(args.categories)
        self._check_handle_budget(len(args.image_refs), min(args.max_objects, self.limits.max_objects)
                                  + (args.overlay_kind is not None))
        loaded = self._load_images(args.image_refs)
        found = self._predict_images([image for _, image in loaded], prompt, deadline, score_threshold=args.min_score)
        nothing = f"No {', '.join(map(repr, prompt.names[:5]))}{' …' if len(prompt) > 5 else ''} " \
                  f"with score >= {args.min_score:.2f}"
        results = [self._image_result(tool, handle, image, detections, args.max_objects, with_masks,
                                      args.overlay_kind, nothing)
                   for (handle, image), detections in zip(loaded, found)]
        return self._grouped(tool, args, results)

    def _segment(self, args: SegmentArgs, deadline: float) -> ImageResult | GroupedResult:
        return self._detect(args, deadline, with_masks=True)

    def _refer(self, args: ReferArgs, deadline: float) -> ImageResult | GroupedResult:
        if len(args.texts) > self.limits.max_prompts:
            raise TooLarge(f"{len(args.texts)} expressions in one call; at most {self.limits.max_prompts}")
        prompts = [self._expression(text) for text in args.texts]
        self._check_handle_budget(len(args.image_refs), len(prompts) * (1 + (args.overlay_kind is not None)))
        loaded = self._load_images(args.image_refs)
        found = self._predict_expressions([image for _, image in loaded], prompts, deadline)
        results = [self._refer_result(handle, image, detections, prompt.text, args)
                   for (handle, image), per_image in zip(loaded, found)
                   for prompt, detections in zip(prompts, per_image)]
        return self._grouped("refer", args, results, len(prompts))

    def _predict_expressions(self, images: list[np.ndarray], prompts: list[Expression],
                             deadline: float) -> list[list[Detections]]:
        """Per image, per expression: its ``Detections`` (one plain predict call for one of each)."""
        if len(images) == 1 and len(prompts) == 1:
            return [[self._predict(images[0], prompts[0])]]
        check = self._stopper(deadline, "stopped at batch", "send fewer or smaller images or fewer expressions")
        with _as_bad_argument():
            return self.predictor.predict_expressions(images, prompts, on_batch=check)

    def _refer_result(self, handle: str, image: np.ndarray, detections: Detections, text: str,
                      args: ReferArgs) -> ImageResult:
        """The best object for ``text``; none below ``min_score`` or, with a calibration, below its threshold."""
        best = float(detections.scores[0]) if len(detections) else 0.0
        nothing = f"No object matches {text!r} with score >= {args.min_score:.2f} (best {best:.2f})"
        kept = detections.filter(min_score=args.min_score)
        if self.rejection is None:
            return self._image_result("refer", handle, image, kept, 1, True, args.overlay_kind, nothing)
        probability, accepted = self.rejection.decide(detections)
        if not accepted:
            kept = kept.filter(labels=[])  # none: no such object
            nothing = (f"No object matches {text!r}: the calibrated probability that one is in the image is "
                       f"{probability:.2f}, below the threshold {self.rejection.threshold:.2f} (best score {best:.2f})")
        result = self._image_result("refer", handle, image, kept, 1, True, args.overlay_kind, nothing)
        summary = f"{result.summary} Calibrated match probability {probability:.2f}." if accepted else result.summary
        return result.model_copy(update={"match_probability": round(probability, 4), "summary": summary})

    def _visual_prompt(self, args: VisualPromptArgs, deadline: float) -> ImageResult:
        if len(args.points) + len(args.boxes) > self.limits.max_prompts:
            raise TooLarge(f"{len(args.points) + len(args.boxes)} points and boxes in one call; "
                           f"at most {self.limits.max_prompts}")
        handle, image = self.images.image(args.image)
        prompt = self._visual_prompt_of(args.points, [[b.x1, b.y1, b.x2, b.y2] for b in args.boxes])
        detections = self._predict(image, prompt)
        # The predictor labels prompts "prompt i" in the order boxes, then positive points.
        names = [f"box {i}" for i in range(len(args.boxes))]
        names += [f"point {i}" for i, p in enumerate(args.points) if p.positive]
        detections = replace(detections, label_names=names)
        return self._image_result("visual_prompt", handle, image, detections, self.limits.max_objects, True,
                                  args.overlay_kind, "No object found under the prompts")

    # ------------------------------------------------------------------ objects found earlier
    @staticmethod
    def _check_mask(handle: str, record: ObjectRecord) -> None:
        if record.mask is None:
            raise BadArgument(f"{handle!r} has no mask (it came from detect); segment, refer or refine it first")

    def _object_image(self, handle: str) -> tuple[ObjectRecord, np.ndarray]:
        """An object handle's record and the pixels of the image it was found in."""
        record = self.object(handle.strip())
        try:
            return record, self.handles.get(record.image, "img")
        except NotFound:
            raise NotFound(f"the image of {handle.strip()!r} ({record.image}) has expired; pass the image again and "
                           "find the object anew") from None

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
            self._check_mask(object_id, record)
            chosen.append(record_info(object_id, record))
        union = np.logical_or.reduce([mask for _, mask in chosen])
        rle, area = encode_rle(union), int(np.count_nonzero(union))
        infos = [info for info, _ in chosen]
        height, width = image.shape[:2]
        return SelectResult(image=handle, width=width, height=height, objects=infos, area=area,
                            mask=MaskRLE(size=rle["size"], counts=rle["counts"]),
                            summary=summarize_selection(f"{handle} ({width}x{height})", infos, area))

    def _refine(self, args: RefineArgs, deadline: float) -> ImageResult:
        """The object re-segmented in its image from a visual prompt of its box (xyxy, absolute pixels) plus the
        points (pixels of that image); several parts (box, positive points) are merged into one object."""
        handle = args.object.strip()
        record, image = self._object_image(handle)
        if len(args.points) + 1 > self.limits.max_prompts:
            raise TooLarge(f"{len(args.points)} points and the object's box in one call; at most "
                           f"{self.limits.max_prompts} prompts")
        detections = self._predict(image, self._visual_prompt_of(args.points, [list(record.box)]))
        refined = merge_parts(detections, f"refined {handle}")
        return self._image_result("refine", record.image, image, refined, 1, True, args.overlay_kind,
                                  f"No refined object for {handle}: for the box or a positive point every "
                                  "candidate covers a negative point; move or drop points")

    def _crop(self, args: CropArgs, deadline: float) -> CropResult:
        """The object's box grown by ``padding`` pixels, clipped to the image, as a new image handle; ``offset`` is
        its top-left corner [x, y] in source pixels."""
        handle = args.object.strip()
        record, image = self._object_image(handle)
        x1, y1, x2, y2 = crop_window(record.box, args.padding, image.shape[:2])
        crop_handle, _ = self.images.image(np.ascontiguousarray(image[y1:y2, x1:x2]))
        width, height = x2 - x1, y2 - y1
        summary = (f"Cropped {handle} {record.label!r} from {record.image} with {args.padding} px padding: new image "
                   f"{crop_handle} ({width}x{height}) at offset [{x1}, {y1}] of {record.image}. Boxes and points in "
                   f"calls on {crop_handle} are in its own pixels; add [{x1}, {y1}] to get {record.image} pixels.")
        return CropResult(image=crop_handle, source=record.image, object=handle, offset=[x1, y1], width=width,
                          height=height, summary=summary)

    def _compare(self, args: CompareArgs, deadline: float) -> CompareResult:
        """Overlap, areas (pixels), centre offset (pixels) and relative position of two objects of one image."""
        first, second = args.first.strip(), args.second.strip()
        (record, image), other = self._object_image(first), self.object(second)
        if record.image != other.image:
            raise BadArgument(f"{first!r} is in {record.image} and {second!r} in {other.image}; compare objects of "
                              "the same image")
        comparison = compare_records(record, other)
        where = f"{record.image} ({image.shape[1]}x{image.shape[0]})"
        names = (f"{first} {record.label!r}", f"{second} {other.label!r}")
        return CompareResult(image=record.image, first=first, second=second, **vars(comparison),
                             summary=summarize_comparison(where, names, comparison))

    def _describe(self, args: DescribeArgs, deadline: float) -> DescribeResult:
        """The describer's text for the object (given its image's pixels and its record)."""
        handle = args.object.strip()
        record, image = self._object_image(handle)
        pixels = image.view()
        pixels.flags.writeable = False  # the describer must not change the image behind the handle
        text = str(self.describer(pixels, record)).strip()[:MAX_DESCRIPTION_CHARS] or "(no description)"
        return DescribeResult(object=handle, image=record.image, label=record.label, description=text,
                              summary=f"{handle} {record.label!r} in {record.image}: {text}")

    # ------------------------------------------------------------------ video
    def _track(self, args: TrackArgs, deadline: float) -> TrackResult:
        """Per-frame objects with stable track ids; an object handle is followed from its own frame on (online
        mode, prompted with its mask), and the frames before it have no objects."""
        refs = args.frames if args.frames is not None else [str(p) for p in self.images.folder_frames(args.video)]
        if len(refs) > self.limits.max_video_frames:
            raise TooLarge(f"{len(refs)} frames; at most {self.limits.max_video_frames}")
        if not refs:
            raise BadArgument("the video has no frames")
        start, prompt, names = self._track_prompt(args, refs)
        frames = self._video_frames(refs, deadline)
        if len({f.shape for f in frames}) != 1:
            raise BadArgument("all frames of a video must have the same size")
        check = self._stopper(deadline, "tracking stopped at frame", "send fewer or smaller frames", len(frames))
        with _as_bad_argument():
            tracks = self.predictor.track(frames[start:], prompt, mode=args.mode, score_threshold=args.min_score,
                                          on_frame=lambda t: check(start + t))
        if names is not None:
            tracks = from_frame(tracks, start, names)
        per_frame = [object_infos(f.topk(min(args.max_objects, self.limits.max_objects)), True) for f in tracks.frames]
        infos = track_infos(tracks)
        size = frames[0].shape[:2]
        return TrackResult(num_frames=len(frames), width=size[1], height=size[0], tracks=infos, frames=per_frame,
                           summary=summarize_tracks(infos, len(frames), size))

    def _video_frames(self, refs: list[str], deadline: float) -> list[np.ndarray]:
        """The decoded frames, within ``Limits.max_video_pixels`` together and the call's time."""
        check = self._stopper(deadline, "stopped reading frame", "send fewer or smaller frames", len(refs))
        frames, total = [], 0
        for k, ref in enumerate(refs):
            check(k)
            frame = self.images.pixels(ref)
            total += frame.shape[0] * frame.shape[1]
            if total > self.limits.max_video_pixels:
                raise TooLarge(f"the first {k + 1} frames hold {total} pixels, over max_video_pixels="
                               f"{self.limits.max_video_pixels}; send fewer or smaller frames")
            frames.append(frame)
        return frames

    def _track_prompt(self, args: TrackArgs, refs: list[str]) -> tuple[int, Any, list[str] | None]:
        """(first frame to track, prompt, label names for an object's track or None)."""
        if args.categories is not None:
            return 0, self._categories(args.categories), None
        if args.expression is not None:
            return 0, self._expression(args.expression), None
        handle = args.object.strip()
        record = self.object(handle)
        self._check_mask(handle, record)
        frames = [ref.strip() for ref in refs]
        if record.image not in frames:
            raise BadArgument(f"{handle!r} was found in {record.image}, which is not among the frames; put "
                              f"{record.image} in 'frames' where tracking should start")
        mask = decode_rle(record.mask.model_dump())
        return frames.index(record.image), VisualPrompt(masks=mask[None]), [f"{handle} {record.label}"]

    def _visual_prompt_of(self, points: list[Point], boxes: list[list[float]]) -> VisualPrompt:
        with _as_bad_argument():
            return VisualPrompt(boxes=boxes or None, points=[[p.x, p.y] for p in points] or None,
                                point_labels=[int(p.positive) for p in points] or None)


def merge_parts(detections: Detections, name: str) -> Detections:
    """A visual prompt's parts (one per box or positive point) as one object named ``name``: the union of their
    masks and boxes, with the lowest of their scores; no detection when any part found nothing."""
    if len(detections) == 0 or len(set(detections.labels.tolist())) < len(detections.label_names):
        return Detections.empty(detections.image_size, [name], with_masks=True)
    boxes = detections.boxes
    box = np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])[None]
    return Detections(boxes=box, scores=detections.scores.min(keepdims=True), labels=np.zeros(1, np.int64),
                      label_names=[name], image_size=detections.image_size,
                      masks=np.logical_or.reduce(detections.masks)[None])


def from_frame(tracks: Tracks, start: int, names: list[str]) -> Tracks:
    """``tracks`` of frames ``start:`` as a whole video: no objects before ``start``, labels named ``names``."""
    size = tracks.frames[0].image_size
    before = [Detections.empty(size, names, with_masks=True) for _ in range(start)]
    return Tracks(before + [replace(frame, label_names=names) for frame in tracks.frames])
