"""ONNX export of GLEE's image path for category prompts, and an onnxruntime runner.

The exported graph is backbone -> pixel decoder (with early fusion) -> object decoder -> heads::

    images            [1, 3, H, W] float32, normalised and zero-padded (glee_core.processing)
    class_embeddings  [K, C] float32  }  a :class:`~glee_core.vocabulary.Vocabulary` encoded once in PyTorch
    fusion_tokens     [T, C] float32  }  (``model.encode_vocabulary``; C = the model's hidden width)
      -> pred_logits  [1, Q, K]   class logits
         pred_boxes   [1, Q, 4]   cxcywh in [0, 1] of the H x W input
         pred_masks   [1, Q, H/4, W/4] mask logits
         pred_scores  [1, Q, 1]   confidence logits
         query_embeds [1, Q, C]   final normed decoder states

K and T are dynamic. H and W are fixed when exporting: the pixel decoder and the deformable attention read
the feature-map sizes as Python numbers (``Tensor.tolist()``), which the exporter records as constants. The
batch is one image: early fusion loops over (image, head) slices in Python, which the exporter unrolls;
:meth:`OnnxGlee.run` runs a batch image by image. The runner resizes each image as the model's
:class:`~glee_core.processing.InputSpec` does, smaller where it would not fit, and zero-pads it to H x W;
padding counts as image content (no padding mask reaches GLEE), so results match
:class:`~glee_core.predictor.GleePredictor` exactly only for images whose padded size is H x W.

The TorchScript-based exporter (``dynamo=False``) writes the file: ``torch.export`` refuses the model, whose
spatial shapes go through ``Tensor.tolist()`` (data-dependent to it). A JSON sidecar ``<file>.json`` holds the
config, the input size and the fingerprint of the text tower that :class:`OnnxGlee` checks vocabularies against.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from glee_core import processing
from glee_core.config import GleeConfig
from glee_core.image_io import ImageSource, load_image
from glee_core.modeling.decoder import PromptMode
from glee_core.modeling.glee import GleeModel
from glee_core.modeling.ms_deform_attn import (
    get_ms_deform_attn_kernel,
    ms_deform_attn_core_pytorch,
    set_ms_deform_attn_kernel,
)
from glee_core.predictor import MAX_BATCH_IMAGES, instance_detections, select_detections
from glee_core.structures import Detections
from glee_core.vocabulary import Vocabulary

INSTALL_HINT = 'pip install "gleekit[onnx]"'
MIN_OPSET = 16
"""GridSample, the deformable attention's sampling, came with opset 16."""
DEFAULT_OPSET = 17
"""17 adds a fused LayerNormalization."""
SIDECAR_FORMAT = "gleekit.onnx/v1"
INPUT_NAMES = ("images", "class_embeddings", "fusion_tokens")
OUTPUT_NAMES = ("pred_logits", "pred_boxes", "pred_masks", "pred_scores", "query_embeds")
DYNAMIC_AXES = {"class_embeddings": {0: "categories"}, "fusion_tokens": {0: "tokens"}, "pred_logits": {2: "categories"}}


def require(module: str) -> ModuleType:
    """Import an optional dependency of the ONNX path, or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"the ONNX path needs the {module!r} package: {INSTALL_HINT}") from exc


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar written beside an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    return Path(f"{path}.json")


def default_image_size(spec: processing.InputSpec) -> tuple[int, int]:
    """The padded (H, W) that holds any image at the model's own resize: a square of the long-side cap."""
    if spec.lsj:
        return spec.lsj_size, spec.lsj_size
    side = math.ceil(spec.max_size / spec.size_divisibility) * spec.size_divisibility
    return side, side


class CategoryImagePath(nn.Module):
    """The traced module: GleeModel's category-prompt forward from the image and text embeddings on.

    Same operations as :meth:`GleeModel.forward` with ``categories`` after the text tower.
    """

    def __init__(self, model: GleeModel):
        super().__init__()
        self.model = model
        self.training = model.training  # the exporter restores this mode on the whole model afterwards

    def forward(self, images: torch.Tensor, class_embeddings: torch.Tensor,
                fusion_tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """images [B, 3, H, W], class_embeddings [K, C], fusion_tokens [T, C] -> the outputs of OUTPUT_NAMES."""
        model = self.model
        features = model.encode_image(images)
        lang = None
        if model.config.early_fusion:
            tokens = fusion_tokens[None].expand(images.shape[0], -1, -1)
            lang = {"hidden": tokens, "masks": torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)}
        pixels = model.pixel_decoder(features, lang=lang)
        model._check_enough_positions(images, pixels.multi_scale_features)
        out = model.predictor(pixels.multi_scale_features, pixels.mask_features, mode=PromptMode.CATEGORY,
                              class_embeddings=class_embeddings)
        return out.pred_logits, out.pred_boxes, out.pred_masks, out.pred_scores, out.pred_track_embed


@contextlib.contextmanager
def _grid_sample_kernel() -> Iterator[None]:
    """Trace the deformable attention's ``grid_sample`` reference core, which exports as ONNX GridSample (the
    CPU default core's ``embedding_bag`` exports as a Loop over every bag, far slower in onnxruntime)."""
    previous = get_ms_deform_attn_kernel()
    set_ms_deform_attn_kernel(ms_deform_attn_core_pytorch)
    try:
        yield
    finally:
        set_ms_deform_attn_kernel(previous)


def _check_size(spec: processing.InputSpec, height: int, width: int) -> None:
    div = spec.size_divisibility
    if height <= 0 or width <= 0 or height % div or width % div:
        raise ValueError(f"height and width must be positive multiples of {div} (the padding step), "
                         f"got {height}x{width}")
    if spec.lsj and (height, width) != (spec.lsj_size, spec.lsj_size):
        raise ValueError(f"this model takes LSJ inputs of {spec.lsj_size}x{spec.lsj_size}, got {height}x{width}")


def export_onnx(model: GleeModel, path: str | Path, *, height: int | None = None, width: int | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write the category-prompt image path of ``model`` (float32) to ``path`` and its sidecar ``path.json``.

    ``height`` / ``width``: the fixed padded input size in pixels, multiples of the model's
    ``size_divisibility`` (default :func:`default_image_size`); the graph takes one image at a time (module
    doc). ``opset``: at least :data:`MIN_OPSET`. Returns ``path``.
    """
    onnx = require("onnx")
    if model.dtype != torch.float32:
        raise ValueError(f"export a float32 model (model.float()), got {model.dtype}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (GridSample), got {opset}")
    spec = model.config.input
    default_h, default_w = default_image_size(spec)
    height, width = height or default_h, width or default_w
    _check_size(spec, height, width)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    width_c = model.lang_projection.shape[1]
    example = tuple(torch.randn(shape, generator=generator).to(model.device)
                    for shape in ((1, 3, height, width), (2, width_c), (3, width_c)))
    with warnings.catch_warnings(), _grid_sample_kernel():
        # Sizes read as Python numbers become constants: intended, H and W are fixed.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(CategoryImagePath(model), example, str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=DYNAMIC_AXES)
    onnx.checker.check_model(str(path))
    sidecar = {
        "format": SIDECAR_FORMAT, "preset": model.config.preset, "config": model.config.to_dict(),
        "image_size": [height, width], "inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES), "opset": opset,
        "text_fingerprint": model.text_fingerprint(), "torch_version": torch.__version__,
    }
    sidecar_path(path).write_text(json.dumps(sidecar, indent=1))
    return path


class OnnxOutputs(NamedTuple):
    """What :meth:`OnnxGlee.run` returns (numpy float32; shapes in the module doc)."""

    pred_logits: np.ndarray
    pred_boxes: np.ndarray
    pred_masks: np.ndarray
    pred_scores: np.ndarray
    query_embeds: np.ndarray


def _fitted_spec(spec: processing.InputSpec, image_hw: tuple[int, int], size: tuple[int, int]) -> processing.InputSpec:
    """The model's resize, capped so that an image of ``image_hw`` fits ``size`` (unchanged where it already does)."""
    if spec.lsj:
        return spec
    long_limit, short_limit = size if image_hw[0] >= image_hw[1] else size[::-1]
    return dataclasses.replace(spec, min_size=min(spec.min_size, short_limit), max_size=min(spec.max_size, long_limit))


class OnnxGlee:
    """An exported GLEE image path in an onnxruntime CPU session.

    Example::

        model = GleeModel.from_pretrained("nano")
        export_onnx(model, "nano.onnx")
        vocab = model.encode_vocabulary(["person", "car"])  # or Vocabulary.load(...)
        dets = OnnxGlee("nano.onnx").predict("street.jpg", vocab, score_threshold=0.3)
    """

    def __init__(self, path: str | Path, *, threads: int = 0):
        """``threads``: onnxruntime intra-op threads (0: its default, one per core)."""
        ort = require("onnxruntime")
        meta_path = sidecar_path(path)
        if not Path(path).is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"need {path} and its sidecar {meta_path}, as written by export_onnx")
        self.metadata = json.loads(meta_path.read_text())
        if self.metadata.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"{meta_path} is not a {SIDECAR_FORMAT} sidecar")
        self.config = GleeConfig.from_dict(self.metadata["config"])
        self.image_size: tuple[int, int] = tuple(self.metadata["image_size"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: graph-optimisation notes are not for the user
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name: i.shape for i in self.session.get_inputs()}
        self._inputs["images"] = ["B", *self._inputs["images"][1:]]  # the graph takes one image; run() loops

    def _checked(self, name: str, array: np.ndarray | torch.Tensor) -> np.ndarray:
        """``array`` as float32 numpy, or a ValueError naming the shape the graph expects."""
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu()
        array = np.asarray(array, dtype=np.float32)
        expected = self._inputs[name]
        fits = array.ndim == len(expected) and all(
            n == d if isinstance(d, int) else n > 0 for n, d in zip(array.shape, expected))
        if not fits:
            raise ValueError(f"{name} must be [{', '.join(map(str, expected))}] (named dims >= 1), "
                             f"got shape {list(array.shape)}")
        return array

    def run(self, images: np.ndarray | torch.Tensor, class_embeddings: np.ndarray | torch.Tensor,
            fusion_tokens: np.ndarray | torch.Tensor) -> OnnxOutputs:
        """The raw outputs for normalised, padded ``images`` [B, 3, H, W] (run one by one) and a vocabulary's
        ``class_embeddings`` [K, C] and ``fusion_tokens`` [T, C]."""
        images, class_embeddings, fusion_tokens = (
            self._checked(name, array) for name, array in zip(INPUT_NAMES, (images, class_embeddings, fusion_tokens)))
        text = {"class_embeddings": class_embeddings, "fusion_tokens": fusion_tokens}
        per_image = [self.session.run(list(OUTPUT_NAMES), {"images": image[None], **text}) for image in images]
        return OnnxOutputs(*(np.concatenate(parts) for parts in zip(*per_image)))

    def preprocess(self, images: Sequence[np.ndarray]) -> processing.ImageBatch:
        """uint8 HWC RGB images -> the [B, 3, H, W] input batch (each image resized to fit, zero-padded)."""
        height, width = self.image_size
        batches = [processing.preprocess([image], _fitted_spec(self.config.input, image.shape[:2], self.image_size))
                   for image in images]
        tensor = torch.cat([F.pad(b.tensor, (0, width - b.padded_size[1], 0, height - b.padded_size[0]))
                            for b in batches])
        return processing.ImageBatch(tensor, [b.image_sizes[0] for b in batches],
                                     [b.original_sizes[0] for b in batches])

    def predict(self, images: ImageSource | Sequence[ImageSource], vocabulary: Vocabulary, *,
                score_threshold: float = 0.0, topk: int | None = None,
                nms_iou: float | None = None) -> Detections | list[Detections]:
        """:meth:`GleePredictor.predict` for a category vocabulary, through ONNX (same post-processing)."""
        vocabulary.check_fingerprint(self.metadata["text_fingerprint"])
        single = not isinstance(images, (list, tuple))
        arrays = [load_image(im) for im in ([images] if single else images)]
        if not arrays or len(arrays) > MAX_BATCH_IMAGES:
            raise ValueError(f"give 1 to {MAX_BATCH_IMAGES} images, got {len(arrays)}")
        batch = self.preprocess(arrays)
        out = self.run(batch.tensor, vocabulary.class_embeddings, vocabulary.fusion_tokens)
        candidates = max(self.config.test_topk, topk or 0)
        raw = (torch.from_numpy(x) for x in (out.pred_logits, out.pred_masks, out.pred_boxes, out.query_embeds))
        results = [select_detections(dets, score_threshold, topk, nms_iou) for dets in
                   instance_detections(*raw, batch, self.config.input, list(vocabulary.names), candidates)]
        return results[0] if single else results


def max_abs_errors(model: GleeModel, runner: OnnxGlee, vocabulary: Vocabulary, *, batch: int = 1,
                   seed: int = 0) -> dict[str, float]:
    """Largest |ONNX - PyTorch| of each output on a random normalised batch of the exported size (model in eval)."""
    if model.training:
        raise ValueError("compare a model in eval mode (model.eval())")
    images = torch.randn(batch, 3, *runner.image_size, generator=torch.Generator().manual_seed(seed))
    inputs = (images, vocabulary.class_embeddings, vocabulary.fusion_tokens)
    with torch.no_grad():
        expected = CategoryImagePath(model)(*(t.to(model.device, model.dtype) for t in inputs))
    got = runner.run(*inputs)
    return {name: float(np.abs(g - e.float().cpu().numpy()).max()) for name, g, e in zip(OUTPUT_NAMES, got, expected)}
