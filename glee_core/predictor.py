"""``GleePredictor``: images and typed prompts in, one :class:`Detections` per image out.

Pre- and post-processing follow the official test path (:mod:`glee_core.processing`): category and
referring prompts use ``instance_inference`` (top-k over queries × classes, mask-weighted scores);
visual prompts use the official demo's selection (best query, clamped boxes).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch

from glee_core import processing
from glee_core.image_io import ImageSource, load_image
from glee_core.modeling.glee import GleeModel, GleeOutput
from glee_core.modeling.visual_prompt import prompt_mask_from_box, prompt_mask_from_mask, prompt_mask_from_point
from glee_core.online_tracking import OnlineTracker
from glee_core.structures import Caption, Categories, Detections, Expression, Tracks, VisualPrompt
from glee_core.video_inference import VIDEO_TOPK, minvis_inference
from glee_core.video_io import VideoReadError, VideoSource, iter_frames
from glee_core.vocabulary import Vocabulary

Prompt = Union[Categories, Vocabulary, Caption, Expression, VisualPrompt]
MAX_BATCH_IMAGES = 64


class GleePredictor:
    """Run a :class:`GleeModel` on user images.

    Example::

        predictor = GleePredictor.from_pretrained("path/to/model_dir")
        dets = predictor.predict("street.jpg", Categories(["person", "car"]), score_threshold=0.3)
    """

    def __init__(self, model: GleeModel, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 autocast: torch.dtype | None = None):
        """``dtype`` converts the weights; ``autocast`` (e.g. ``torch.bfloat16`` on a GPU) keeps float32 weights and
        runs the forward under :func:`torch.autocast` (deformable sampling and post-processing stay float32).
        Both change outputs slightly (opt-in; the default is the official float32 path)."""
        self.model = model.eval()
        if device is not None or dtype is not None:
            self.model.to(device=device, dtype=dtype)
        self.autocast = autocast

    @classmethod
    def from_pretrained(cls, source: str | Path, *, preset: str | None = None, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, autocast: torch.dtype | None = None,
                        strict: bool = True) -> "GleePredictor":
        """Load the model with :meth:`GleeModel.from_pretrained` and wrap it."""
        return cls(GleeModel.from_pretrained(source, preset=preset, strict=strict), device=device, dtype=dtype,
                   autocast=autocast)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.model.device.type, dtype=self.autocast, enabled=self.autocast is not None)

    def _forward(self, images: torch.Tensor, **prompt) -> GleeOutput:
        """The model on a batch, under autocast when set."""
        with self._autocast():
            return self.model(images, **prompt)

    def _encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone features of a batch (under autocast when set), for ``image_features=`` of later forwards."""
        with self._autocast():
            return self.model.encode_image(images)

    @staticmethod
    def load_image(source: ImageSource) -> np.ndarray:
        """Any supported image source -> uint8 HWC RGB (validated; see :func:`glee_core.image_io.load_image`)."""
        return load_image(source)

    @property
    def spec(self) -> processing.InputSpec:
        return self.model.config.input

    @torch.no_grad()
    def predict(
        self,
        images: ImageSource | Sequence[ImageSource],
        prompt: Prompt,
        *,
        score_threshold: float = 0.0,
        topk: int | None = None,
        nms_iou: float | None = None,
    ) -> Detections | list[Detections]:
        """Detect, segment or ground objects.

        Args:
            images: one image or a list (path, PIL, uint8 HWC RGB numpy, or tensor); any size.
            prompt: ``Categories`` or an encoded ``Vocabulary`` (labels index the names), a ``Caption``
                (labels index its phrases; ``caption.spans[label]`` is the phrase's text span), ``Expression`` (one result per image,
                label 0) or ``VisualPrompt`` (one result per box/foreground point/mask/scribble, label
                = prompt index; one image at a time). Background points (``point_labels`` 0) exclude:
                each prompt then returns its best object whose mask covers no background point, or
                nothing when every candidate does.
            score_threshold: drop detections scoring below it.
            topk: keep at most this many detections (highest scores first). Category prompts return up to
                the model's ``test_topk`` (the official count) by default; a larger ``topk`` keeps that many
                (query, class) pairs instead (e.g. 300 for LVIS).
            nms_iou: if given, class-agnostic NMS at this IoU.

        Returns one :class:`Detections` for a single image, else a list. Boxes are xyxy float32 in
        input pixels (the official scaling: not clipped to the image), masks bool at input size. A list is one
        batch zero-padded to its largest input, as in the official code, so images of other sizes change each
        other's results: :meth:`predict_each` gives one-image results.
        """
        single = not isinstance(images, (list, tuple))
        arrays = [load_image(im) for im in ([images] if single else images)]
        if not arrays:
            raise ValueError("no images given")
        if len(arrays) > MAX_BATCH_IMAGES:
            raise ValueError(f"{len(arrays)} images in one call; at most {MAX_BATCH_IMAGES}, split the list")
        if isinstance(prompt, (Categories, Vocabulary, Caption)):
            categories = self._categories(prompt)
            label_names = list(prompt.phrases if isinstance(prompt, Caption) else prompt.names)
            results = self._predict_text(arrays, categories=categories, label_names=label_names, candidates=topk)
        elif isinstance(prompt, Expression):
            results = self._predict_text(arrays, expressions=[prompt.normalized] * len(arrays),
                                         label_names=[prompt.text])
        elif isinstance(prompt, VisualPrompt):
            if len(arrays) != 1:
                raise ValueError("visual prompts refer to one image; call predict once per image")
            results = [self._predict_visual(arrays[0], prompt)]
        else:
            raise TypeError(f"prompt must be Categories, a Vocabulary, a Caption, Expression or VisualPrompt, "
                            f"got {type(prompt).__name__}")
        results = [select_detections(d, score_threshold, topk, nms_iou) for d in results]
        return results[0] if single else results

    def batch_groups(self, images: Sequence[np.ndarray]) -> list[list[int]]:
        """Indices of ``images`` (uint8 HWC arrays) in batches whose results equal one-image calls.

        A batch is zero-padded to its largest network input, and that padding reaches the model (it changes
        the other images' results), so images are grouped by the padded input size they get alone; each
        group keeps first-appearance order and holds at most ``MAX_BATCH_IMAGES`` images.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(input_size(image.shape[:2], self.spec), []).append(i)
        return [group[start:start + MAX_BATCH_IMAGES] for group in groups.values()
                for start in range(0, len(group), MAX_BATCH_IMAGES)]

    def predict_each(self, images: Sequence[ImageSource], prompt: Prompt, *,
                     on_batch: Callable[[int], None] | None = None, **kwargs) -> list[Detections]:
        """:meth:`predict` of each image as if alone, batched by :meth:`batch_groups` (the same padded input
        size); ``kwargs`` as for :meth:`predict`, ``on_batch(k)`` before the k-th forward."""
        arrays = [load_image(im) for im in images]
        if not arrays:
            raise ValueError("no images given")
        return self._per_group(arrays, lambda group: self.predict([arrays[i] for i in group], prompt, **kwargs),
                               on_batch)

    @torch.no_grad()
    def predict_expressions(
        self,
        images: Sequence[ImageSource],
        expressions: Sequence[Expression | str],
        *,
        score_threshold: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[Detections]]:
        """Ground every expression in every image: ``result[i][j]`` is image i with expression j.

        Each (image, expression) pair is one item of a batched forward (the model takes one expression per
        batch item); batches hold at most ``MAX_BATCH_IMAGES`` pairs of images with the same padded input
        size (:meth:`batch_groups`), so every result equals ``predict(images[i], Expression(expressions[j]))``
        (up to float rounding). Each result is sorted by score, its one label named by its own expression.
        ``on_batch(k)`` is called before the k-th forward (progress, cancellation by raising).
        """
        arrays = [load_image(im) for im in images]
        prompts = [e if isinstance(e, Expression) else Expression(e) for e in expressions]
        if not arrays or not prompts:
            raise ValueError(f"give at least one image and one expression, got {len(arrays)} and {len(prompts)}")
        pairs = [(i, j) for i in range(len(arrays)) for j in range(len(prompts))]
        found = self._per_group([arrays[i] for i, _ in pairs], lambda group: self._predict_text(
            [arrays[pairs[p][0]] for p in group], label_names=["expression"],
            expressions=[prompts[pairs[p][1]].normalized for p in group]), on_batch)
        results = {(i, j): select_detections(replace(dets, label_names=[prompts[j].text]), score_threshold, None, None)
                   for (i, j), dets in zip(pairs, found)}
        return [[results[i, j] for j in range(len(prompts))] for i in range(len(arrays))]

    def _per_group(self, arrays: list[np.ndarray], run: Callable[[list[int]], list[Detections]],
                   on_batch: Callable[[int], None] | None = None) -> list[Detections]:
        """``run(indices)`` on each of :meth:`batch_groups` of ``arrays`` (``on_batch(k)`` before the k-th); the
        results in the order of ``arrays``."""
        results: list[Detections | None] = [None] * len(arrays)
        for k, group in enumerate(self.batch_groups(arrays)):
            if on_batch is not None:
                on_batch(k)
            for i, detections in zip(group, run(group)):
                results[i] = detections
        return results

    def stream(
        self,
        video: VideoSource,
        prompt: Categories | Expression | VisualPrompt,
        *,
        score_threshold: float = 0.3,
        continue_threshold: float | None = None,
        topk: int | None = None,
        nms_iou: float | None = 0.7,
        tracker: OnlineTracker | None = None,
        max_frames: int | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> Iterator[Detections]:
        """Online tracking: yield each frame's ``Detections`` (with ``track_ids``) as soon as it is done.

        Args:
            video: a folder of frames, a video file or an iterable of images (:mod:`glee_core.video_io`).
            prompt: ``Categories``, an ``Expression``, or a ``VisualPrompt`` on the first frame: each of its
                objects is then followed by mask propagation (frame t is prompted with the object's mask
                in frame t-1, or its last mask scoring ``>= score_threshold``); track id = prompt index + 1.
            score_threshold, topk, nms_iou: per-frame selection, as in :meth:`predict` (NMS removes the
                duplicate boxes one query yields under several category names).
            continue_threshold: a live track may also continue with a detection scoring below
                ``score_threshold`` down to this; such a detection never starts a track (ByteTrack's second
                association round, :mod:`glee_core.online_tracking`). None: ``score_threshold`` alone. Not used
                with a ``VisualPrompt``.
            tracker: the association state and its settings (a fresh ``OnlineTracker()`` by default);
                memory stays bounded however long the video.
            max_frames: refuse longer videos (the frames before the limit are still yielded).
            on_frame: called with the frame index before each frame (progress, cancellation by raising).
        """
        if isinstance(prompt, VisualPrompt):
            yield from self._propagate(video, prompt, score_threshold, max_frames, on_frame)
            return
        _check_video_prompt(prompt)
        tracker = tracker if tracker is not None else OnlineTracker()
        floor = score_threshold if continue_threshold is None else min(score_threshold, continue_threshold)
        for image in _frames(video, max_frames, on_frame):
            with torch.no_grad():
                detections = self.predict(image, prompt, score_threshold=floor, topk=topk, nms_iou=nms_iou)
            yield tracker.update(detections, score_threshold=score_threshold)

    def _propagate(self, video: VideoSource, prompt: VisualPrompt, score_threshold: float, max_frames: int | None,
                   on_frame: Callable[[int], None] | None) -> Iterator[Detections]:
        """Follow the first frame's visual-prompt objects by prompting each frame with their last good masks."""
        names, masks = None, None
        for image in _frames(video, max_frames, on_frame):
            size = image.shape[:2]
            with torch.no_grad():
                if masks is None:
                    found = self.predict(image, prompt)
                    names = found.label_names
                    masks = np.zeros((len(names), *size), bool)
                else:
                    found = self.predict(image, VisualPrompt(masks=masks))
            good = found[(found.scores >= score_threshold) & found.masks.any(axis=(1, 2))]
            masks[good.labels] = good.masks  # objects lost in this frame keep their last good mask
            yield Detections(boxes=good.boxes, scores=good.scores, labels=good.labels, label_names=names,
                             image_size=size, masks=good.masks, query_embeds=good.query_embeds,
                             query_index=good.query_index, track_ids=good.labels + 1)
            if not masks.any(axis=(1, 2)).all():
                lost = np.flatnonzero(~masks.any(axis=(1, 2))).tolist()
                raise ValueError(f"prompts {lost} found no object scoring >= {score_threshold} in the first frame; "
                                 "lower score_threshold or move the prompt")

    def track(
        self,
        video: VideoSource,
        prompt: Categories | Expression | VisualPrompt,
        *,
        mode: str = "online",
        score_threshold: float = 0.3,
        continue_threshold: float | None = None,
        topk: int | None = None,
        nms_iou: float | None = 0.7,
        tracker: OnlineTracker | None = None,
        window: int = 10,
        max_frames: int | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> Tracks:
        """Track objects through a video -> :class:`Tracks` (per-frame ``Detections`` with stable ``track_ids``).

        ``prompt``: ``Categories``, an ``Expression``, or (online only) a ``VisualPrompt`` on the first frame.

        ``mode="online"`` collects :meth:`stream` (frame by frame, bounded memory; ``continue_threshold``,
        ``tracker``, ``nms_iou`` apply). ``mode="official"`` is GLEE's own video inference
        (:mod:`glee_core.video_inference`): the model runs on clips of ``window`` frames, queries are associated
        over the whole video, and each of the top-``topk`` (default 30) (track, class) pairs scoring
        ``>= score_threshold`` becomes a track (ids 1.. in decreasing score) that appears in the frames where its
        mask is not empty. It keeps every frame's outputs until the end, so its memory grows with the video.
        """
        if mode == "online":
            return Tracks(list(self.stream(video, prompt, score_threshold=score_threshold,
                                           continue_threshold=continue_threshold, topk=topk, nms_iou=nms_iou,
                                           tracker=tracker, max_frames=max_frames, on_frame=on_frame)))
        if mode != "official":
            raise ValueError(f"mode must be 'online' or 'official', got {mode!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        return self._track_official(video, prompt, score_threshold, topk or VIDEO_TOPK, window, max_frames, on_frame)

    @torch.no_grad()
    def _track_official(self, video: VideoSource, prompt: Categories | Expression, score_threshold: float, topk: int,
                        window: int, max_frames: int | None, on_frame: Callable[[int], None] | None) -> Tracks:
        _check_video_prompt(prompt)
        frames = list(_frames(video, max_frames, None))
        label_names = list(prompt.names) if isinstance(prompt, Categories) else [prompt.text]
        parts = []
        for start in range(0, len(frames), window):
            if on_frame is not None:
                on_frame(start)
            clip = frames[start:start + window]
            batch = processing.preprocess(clip, self.spec, device=self.model.device)
            if isinstance(prompt, Categories):
                out = self._forward(batch.tensor, categories=label_names)
            else:
                out = self._forward(batch.tensor, expressions=[prompt.normalized] * len(clip))
            parts.append([x.float().cpu() for x in (out.pred_logits, out.pred_boxes, out.pred_masks, out.query_embeds)])
        logits, boxes, masks, embeds = (torch.cat(x) for x in zip(*parts))
        original = batch.original_sizes[0]
        crop = processing.valid_region(batch.image_sizes[0], original, self.spec.lsj)
        video_out = minvis_inference(logits, boxes, masks, embeds, batch.padded_size, crop, original, topk=topk)
        order = torch.argsort(-video_out.scores, stable=True)
        order = order[video_out.scores[order] >= score_threshold]
        results = []
        for t in range(len(frames)):
            rows = order[video_out.masks[order, t].flatten(1).any(1)]
            results.append(Detections(
                boxes=video_out.boxes[rows, t].numpy(), scores=video_out.scores[rows].numpy(),
                labels=video_out.labels[rows].numpy(), label_names=label_names, image_size=original,
                masks=video_out.masks[rows, t].numpy(), query_index=video_out.query_index[rows].numpy(),
                track_ids=(torch.nonzero(rows[:, None] == order[None])[:, 1] + 1).numpy(),
            ))
        return Tracks(results)

    # ------------------------------------------------------------------ internals
    def _categories(self, prompt: Categories | Vocabulary | Caption) -> list[str] | Vocabulary:
        """What the model's ``categories`` argument gets for a category-like prompt."""
        if isinstance(prompt, Caption):
            if prompt.context:
                with torch.no_grad():
                    return self.model.encode_caption(prompt.text, prompt.spans)
            return prompt.phrases
        return prompt if isinstance(prompt, Vocabulary) else list(prompt.names)

    def _predict_text(self, arrays: list[np.ndarray], *, label_names: list[str], categories=None, expressions=None,
                      candidates: int | None = None) -> list[Detections]:
        """``candidates``: (query, class) pairs kept per image when more than the official ``test_topk``. An image
        given several times (the same array object, as several expressions on one image) runs the backbone once."""
        distinct: dict[int, np.ndarray] = {}  # id -> array, in first-appearance order
        for array in arrays:
            distinct.setdefault(id(array), array)
        position = {key: i for i, key in enumerate(distinct)}
        index = [position[id(array)] for array in arrays]
        batch = processing.preprocess(list(distinct.values()), self.spec, device=self.model.device)
        features = None
        if len(distinct) < len(arrays):
            rows = torch.tensor(index, device=batch.tensor.device)
            features = {level: f[rows] for level, f in self._encode(batch.tensor).items()}
            batch = processing.ImageBatch(batch.tensor[rows], [batch.image_sizes[i] for i in index],
                                          [batch.original_sizes[i] for i in index])
        out = self._forward(batch.tensor, categories=categories, expressions=expressions, image_features=features)
        topk = 1 if expressions is not None else max(self.model.config.test_topk, candidates or 0)
        return instance_detections(out.pred_logits, out.pred_masks, out.pred_boxes, out.query_embeds, batch, self.spec,
                                   label_names, topk)

    def _predict_visual(self, image: np.ndarray, prompt: VisualPrompt) -> Detections:
        prompt.validate_against(image.shape[:2])
        background = np.zeros((0, 2)) if prompt.points is None else prompt.points[prompt.point_labels == 0]
        foreground = None if prompt.points is None else prompt.points[prompt.point_labels == 1]
        if len(background) == prompt.num_prompts:
            raise ValueError("background points (point_labels 0) only exclude objects; give at least one "
                             "foreground point, box, scribble or mask to select an object")
        batch = processing.preprocess([image], self.spec, device=self.model.device)
        image_size, original = batch.image_sizes[0], batch.original_sizes[0]
        sy, sx = image_size[0] / original[0], image_size[1] / original[1]
        masks, kinds = [], []
        for box in [] if prompt.boxes is None else prompt.boxes:
            scaled = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
            masks.append(prompt_mask_from_box(scaled, image_size, batch.padded_size)), kinds.append("box")
        for point in [] if foreground is None else foreground:
            scaled = [min(point[0] * sx, image_size[1] - 1), min(point[1] * sy, image_size[0] - 1)]
            masks.append(prompt_mask_from_point(scaled, image_size, batch.padded_size)), kinds.append("point")
        for mask in [] if prompt.masks is None else prompt.masks:
            masks.append(prompt_mask_from_mask(self._resize_prompt_mask(mask, image_size), batch.padded_size))
            kinds.append("mask")
        for scribble in [] if prompt.scribbles is None else prompt.scribbles:
            masks.append(prompt_mask_from_mask(self._rasterize_scribble(scribble, original, image_size), batch.padded_size))
            kinds.append("scribble")
        rows = []
        features = self._encode(batch.tensor)  # the backbone does not see the prompt: once for every prompt
        for mask, kind in zip(masks, kinds):
            out = self._forward(batch.tensor, visual_prompt_masks=mask.to(self.model.device), visual_prompt_type=kind,
                                image_features=features)
            masks_up = processing.upsample_masks(out.pred_masks[0].float(), batch.padded_size, image_size, original)
            boxes = processing.scale_boxes(out.pred_boxes[0].float(), batch.padded_size, image_size, original, lsj=True)
            candidates = len(out.pred_logits[0]) if len(background) else 1
            inst = processing.visual_prompt_inference(out.pred_logits[0].float(), masks_up, boxes, topk=candidates)
            rows.append((self._exclude_background(inst, background), out.query_embeds[0]))
        names = [f"prompt {i}" for i in range(len(rows))]
        parts = [to_detections(inst, embeds, names, original, label=i) for i, (inst, embeds) in enumerate(rows)]
        return Detections(
            boxes=np.concatenate([p.boxes for p in parts]), scores=np.concatenate([p.scores for p in parts]),
            labels=np.concatenate([p.labels for p in parts]), label_names=names, image_size=original,
            masks=np.concatenate([p.masks for p in parts]), query_embeds=np.concatenate([p.query_embeds for p in parts]),
            query_index=np.concatenate([p.query_index for p in parts]),
        )

    @staticmethod
    def _exclude_background(inst: processing.InstanceResult, background: np.ndarray) -> processing.InstanceResult:
        """The best candidate whose mask covers none of the ``background`` points ([B, 2] xy), or none at all."""
        if not len(background):
            return inst[:1]
        height, width = inst.mask_logits.shape[-2:]
        xs = torch.as_tensor(background[:, 0]).long().clamp(0, width - 1)
        ys = torch.as_tensor(background[:, 1]).long().clamp(0, height - 1)
        allowed = ~inst.masks[:, ys, xs].any(dim=1)
        return inst[allowed.nonzero()[:1, 0]]

    @staticmethod
    def _resize_prompt_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        return torch.nn.functional.interpolate(t, size=size, mode="nearest")[0, 0] > 0.5

    @staticmethod
    def _rasterize_scribble(points: np.ndarray, original: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """A polyline in input pixels -> a 3-pixel-wide mask at the network-input size."""
        from PIL import Image, ImageDraw

        canvas = Image.new("L", (original[1], original[0]), 0)
        ImageDraw.Draw(canvas).line([tuple(map(float, p)) for p in points], fill=1, width=3)
        canvas = canvas.resize((size[1], size[0]), Image.NEAREST)
        return torch.from_numpy(np.asarray(canvas) > 0)



def instance_detections(pred_logits: torch.Tensor, pred_masks: torch.Tensor, pred_boxes: torch.Tensor,
                        query_embeds: torch.Tensor, batch: processing.ImageBatch, spec: processing.InputSpec,
                        label_names: list[str], topk: int) -> list[Detections]:
    """Raw outputs of a batch (logits [B, Q, K], mask logits [B, Q, h, w], boxes [B, Q, 4] cxcywh, query embeds
    [B, Q, D]; torch tensors) -> per image, its top-``topk`` (query, class) instances in original pixels."""
    results = []
    for i, (image_size, original) in enumerate(zip(batch.image_sizes, batch.original_sizes)):
        crop = processing.valid_region(image_size, original, spec.lsj)
        inst = processing.postprocess_instances(pred_logits[i].float(), pred_masks[i].float(), pred_boxes[i].float(),
                                                batch.padded_size, crop, original, spec.lsj, topk)
        results.append(to_detections(inst, query_embeds[i], label_names, original))
    return results


def to_detections(inst: processing.InstanceResult, query_embeds: torch.Tensor, label_names: list[str],
                  original: tuple[int, int], label: int | None = None) -> Detections:
    """One image's instances -> :class:`Detections` (``label``: one label for all, else the instances' own)."""
    labels = inst.labels.cpu().numpy() if label is None else np.full(len(inst.scores), label)
    return Detections(
        boxes=inst.boxes.cpu().numpy(), scores=inst.scores.float().cpu().numpy(), labels=labels,
        label_names=label_names, image_size=original, masks=inst.masks.cpu().numpy(),
        query_embeds=query_embeds[inst.query_index].float().cpu().numpy(), query_index=inst.query_index.cpu().numpy(),
    )


def select_detections(dets: Detections, score_threshold: float, topk: int | None, nms_iou: float | None) -> Detections:
    """Best first; then the score threshold, class-agnostic NMS and top-k, each when set."""
    dets = dets.sort_by_score()
    if score_threshold > 0:
        dets = dets.filter(min_score=score_threshold)
    if nms_iou is not None:
        dets = dets.nms(nms_iou, class_agnostic=True)
    if topk is not None:
        dets = dets.topk(topk)
    return dets


def input_size(image_size: tuple[int, int], spec: processing.InputSpec) -> tuple[int, int]:
    """The padded network-input (h, w) that :func:`processing.preprocess` gives a lone image of ``image_size``."""
    if spec.lsj:
        height = width = spec.lsj_size
    else:
        height, width = processing.resized_shape(*image_size, spec.min_size, spec.max_size)
    div = max(spec.size_divisibility, 1)
    return -(-height // div) * div, -(-width // div) * div


def _check_video_prompt(prompt: object) -> None:
    if not isinstance(prompt, (Categories, Expression)):
        raise TypeError(f"video prompts are Categories, an Expression or (online mode) a VisualPrompt on the first "
                        f"frame, got {type(prompt).__name__}")


def _frames(video: VideoSource, max_frames: int | None, on_frame: Callable[[int], None] | None) -> Iterator[np.ndarray]:
    """The frames of ``video``, all of frame 0's size; ``on_frame(t)`` before each; an empty video raises."""
    size = None
    for t, image in enumerate(iter_frames(video, max_frames)):
        if on_frame is not None:
            on_frame(t)
        if size is not None and image.shape[:2] != size:
            raise ValueError(f"frame {t} is {image.shape[1]}x{image.shape[0]} (WxH), frame 0 is {size[1]}x{size[0]}")
        size = image.shape[:2]
        yield image
    if size is None:
        raise VideoReadError("the video has no frames")
