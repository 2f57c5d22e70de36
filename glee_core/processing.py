"""Pre- and post-processing of the official GLEE test path.

Preprocessing: ``ResizeShortestEdge`` (or the LSJ resize + fixed-size pad of the Pro preset) on the
uint8 image, per-channel normalisation, then zero padding of the batch to a multiple of
``size_divisibility`` (bottom/right, after normalisation; no padding mask reaches the model).

Post-processing: mask logits are upsampled to the padded size, cropped to the valid region and
resized to the original image; boxes (cxcywh in [0, 1] of the padded input) are scaled to
original pixels. See ``../shared/reference/glee/README.md`` §3 and §5 for the official rules.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F


@dataclass(frozen=True)
class InputSpec:
    """How images are resized and normalised before the model (official ``INPUT.*`` keys).

    Attributes:
        min_size: ``MIN_SIZE_TEST``, the target short side in pixels.
        max_size: ``MAX_SIZE_TEST``, the cap on the long side in pixels.
        size_divisibility: padded H and W are multiples of this.
        pixel_mean, pixel_std: RGB normalisation, in 0..255 units.
        lsj: the large-scale-jitter test path of GLEE-Pro: the long side is resized to
            ``lsj_size``, the image padded to a ``lsj_size`` square with ``lsj_pad_value``, and
            outputs are post-processed by the LSJ rule.
    """

    min_size: int = 800
    max_size: int = 1333
    size_divisibility: int = 32
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    lsj: bool = False
    lsj_size: int = 1536
    lsj_pad_value: float = 128.0


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Output (h, w) of detectron2's ``ResizeShortestEdge.get_output_shape``."""
    scale = min_size / min(height, width)
    if height < width:
        new_h, new_w = float(min_size), scale * width
    else:
        new_h, new_w = scale * height, float(min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize a uint8 HWC RGB image as the official test mapper does (PIL bilinear).

    With ``spec.lsj`` the long side goes to ``lsj_size`` and the result is padded (bottom/right)
    to a ``lsj_size`` square with ``lsj_pad_value`` (detectron2 ``FixedSizeCrop``).
    """
    h, w = image.shape[:2]
    if spec.lsj:
        new_h, new_w = resized_shape(h, w, spec.lsj_size, spec.lsj_size)
    else:
        new_h, new_w = resized_shape(h, w, spec.min_size, spec.max_size)
    if new_h < 1 or new_w < 1:
        raise ValueError(f"image of {w}x{h} (WxH) is too elongated: resizing it for the model gives "
                         f"{new_w}x{new_h}; crop it to a less extreme aspect ratio")
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    if spec.lsj:
        padded = np.full((spec.lsj_size, spec.lsj_size, 3), spec.lsj_pad_value, dtype=np.float32)
        padded[:new_h, :new_w] = image
        return padded
    return image


@dataclass
class ImageBatch:
    """A normalised, padded batch.

    Attributes:
        tensor: [B, 3, Hp, Wp] float, normalised, zero-padded bottom/right.
        image_sizes: per image (h, w) of the resized image inside the padding.
        original_sizes: per image (H0, W0) of the input image.
    """

    tensor: torch.Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def normalize_and_pad(images: list[torch.Tensor], spec: InputSpec) -> torch.Tensor:
    """Normalise CHW images (0..255 values, any float/uint8 dtype) and pad them into one batch.

    Returns [B, 3, Hp, Wp] float32 with Hp, Wp the batch maxima rounded up to ``size_divisibility``.
    """
    device = images[0].device
    mean = torch.tensor(spec.pixel_mean, device=device).view(3, 1, 1)
    std = torch.tensor(spec.pixel_std, device=device).view(3, 1, 1)
    max_h = max(int(im.shape[-2]) for im in images)
    max_w = max(int(im.shape[-1]) for im in images)
    div = spec.size_divisibility
    if div > 1:
        max_h, max_w = math.ceil(max_h / div) * div, math.ceil(max_w / div) * div
    batch = torch.zeros(len(images), 3, max_h, max_w, device=device)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = (im.float() - mean) / std
    return batch


def preprocess(images: list[np.ndarray], spec: InputSpec, device: torch.device | str = "cpu") -> ImageBatch:
    """uint8 HWC RGB images of any sizes -> the model's input batch."""
    resized = [resize_image(im, spec) for im in images]
    tensors = [torch.from_numpy(np.ascontiguousarray(r.transpose(2, 0, 1))).to(device) for r in resized]
    sizes = [(int(r.shape[0]), int(r.shape[1])) for r in resized]
    return ImageBatch(normalize_and_pad(tensors, spec), sizes, [tuple(im.shape[:2]) for im in images])


def valid_region(image_size: tuple[int, int], original_size: tuple[int, int], lsj: bool) -> tuple[int, int]:
    """The (h, w) of the padded input that holds the image, as the official post-processing takes it.

    Standard path: the resized size. LSJ path: ``image_size[0] / max(H0, W0)`` times (H0, W0), truncated
    (the official formula, which assumes a square LSJ input).
    """
    if not lsj:
        return image_size
    ratio = image_size[0] / max(original_size)
    return int(original_size[0] * ratio), int(original_size[1] * ratio)


def upsample_masks(
    mask_logits: torch.Tensor, padded_size: tuple[int, int], crop: tuple[int, int], out_size: tuple[int, int]
) -> torch.Tensor:
    """[N, h/4, w/4] (or [N, T, ...]) mask logits -> [N, H0, W0] logits at the original image size.

    Bilinear (align_corners=False) to the padded size, crop to ``crop``, bilinear to ``out_size``.
    """
    squeeze = mask_logits.dim() == 3
    x = mask_logits[:, None] if squeeze else mask_logits
    x = F.interpolate(x, size=padded_size, mode="bilinear", align_corners=False)
    x = x[..., : crop[0], : crop[1]]
    x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
    return x[:, 0] if squeeze else x


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def scale_boxes(
    boxes: torch.Tensor,
    padded_size: tuple[int, int],
    crop: tuple[int, int],
    original_size: tuple[int, int],
    lsj: bool,
) -> torch.Tensor:
    """cxcywh boxes in [0, 1] of the padded input -> xyxy in original-image pixels.

    Standard path: ``× padded × original / crop``, unclamped (official ``box_postprocess``).
    LSJ path (``LSJ_box_postprocess``, also app.py's visual prompts): ``× padded / crop``, clamped
    to [0, 1], ``× original``.
    """
    xyxy = box_cxcywh_to_xyxy(boxes)
    (hp, wp), (hc, wc), (h0, w0) = padded_size, crop, original_size
    if lsj:
        rel = xyxy * xyxy.new_tensor([wp, hp, wp, hp]) / xyxy.new_tensor([wc, hc, wc, hc])
        return rel.clamp(0, 1) * xyxy.new_tensor([w0, h0, w0, h0])
    sx, sy = wp / wc * w0, hp / hc * h0
    return xyxy * xyxy.new_tensor([sx, sy, sx, sy])


def mask_scores(mask_logits: torch.Tensor) -> torch.Tensor:
    """Mean mask probability inside each predicted mask: [N, H, W] logits -> [N] (official, +1e-6)."""
    binary = (mask_logits > 0).to(mask_logits.dtype).flatten(1)
    return (mask_logits.sigmoid().flatten(1) * binary).sum(1) / (binary.sum(1) + 1e-6)


@dataclass
class InstanceResult:
    """Post-processed instances of one image (torch tensors, original pixels).

    Attributes: boxes [N, 4] xyxy; scores [N]; labels [N] int64; mask_logits [N, H0, W0];
    query_index [N] int64; prob [N] class probability before the mask-score factor.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    mask_logits: torch.Tensor
    query_index: torch.Tensor
    prob: torch.Tensor

    @property
    def masks(self) -> torch.Tensor:
        return self.mask_logits > 0

    def __getitem__(self, index: slice | torch.Tensor) -> "InstanceResult":
        """The instances selected by ``index`` (a slice or index tensor), every field alike."""
        return InstanceResult(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


def instance_inference(
    logits: torch.Tensor, mask_logits: torch.Tensor, boxes: torch.Tensor, topk: int, mask_score: bool = True,
    upsample: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> InstanceResult:
    """Official ``instance_inference``: top-k over queries × classes (query-major, unsorted).

    Args:
        logits: [Q, K] class logits.
        mask_logits: [Q, H0, W0] upsampled mask logits, or [Q, h, w] low-resolution ones with ``upsample``.
        boxes: [Q, 4] xyxy boxes in original pixels.
        topk: number of (query, class) pairs kept; at most Q·K.
        mask_score: multiply the probability by the mean mask probability inside the mask.
        upsample: maps [N, h, w] mask logits to [N, H0, W0]; only the kept queries are upsampled, once each,
            which equals upsampling all of them (every mask is interpolated on its own) at a fraction of the cost.
    """
    num_queries, num_classes = logits.shape
    k = min(topk, num_queries * num_classes)
    prob, index = logits.sigmoid().flatten().topk(k, sorted=False)
    query = torch.div(index, num_classes, rounding_mode="floor")
    labels = index % num_classes
    if upsample is None:
        masks = mask_logits[query]
    else:  # a query kept for several classes is upsampled once
        unique, inverse = torch.unique(query, return_inverse=True)
        masks = upsample(mask_logits[unique])[inverse]
    scores = prob * mask_scores(masks) if mask_score else prob
    return InstanceResult(boxes[query], scores, labels, masks, query, prob)


def postprocess_instances(logits: torch.Tensor, mask_logits: torch.Tensor, boxes: torch.Tensor,
                          padded_size: tuple[int, int], crop: tuple[int, int], original_size: tuple[int, int],
                          lsj: bool, topk: int) -> InstanceResult:
    """One image's raw outputs (logits [Q, K], mask logits [Q, Hp/4, Wp/4], boxes [Q, 4] cxcywh in [0, 1] of
    the padded input) -> its top-k instances in original pixels (:func:`instance_inference`)."""
    pixel_boxes = scale_boxes(boxes, padded_size, crop, original_size, lsj)
    return instance_inference(logits, mask_logits, pixel_boxes, topk,
                              upsample=lambda masks: upsample_masks(masks, padded_size, crop, original_size))


def visual_prompt_inference(logits: torch.Tensor, mask_logits: torch.Tensor, boxes: torch.Tensor, topk: int = 1) -> InstanceResult:
    """The demo's (app.py) selection for visual prompts: best class per query, sorted top-k queries.

    The score is ``max_k sigmoid(logits)`` without the mask-score factor. Shapes as in
    :func:`instance_inference`.
    """
    prob_all = logits.sigmoid()
    prob, labels = prob_all.max(-1)
    scores, query = prob.topk(min(topk, prob.shape[0]), sorted=True)
    return InstanceResult(boxes[query], scores, labels[query], mask_logits[query], query, scores)
