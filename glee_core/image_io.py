"""Load one image from any common source into a fresh ``uint8`` ``[H, W, 3]`` RGB numpy array.

Accepted sources and rules:

* a path (``str`` / ``Path``), encoded bytes, or a ``PIL.Image``: the size is read from the header
  and checked against ``max_pixels`` *before* the pixels are decoded; EXIF orientation is applied
  (as detectron2's ``read_image`` does); every mode is converted with ``convert("RGB")``, so an alpha
  channel is dropped, not composited;
* a numpy array ``[H, W]`` (grey), ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` (alpha dropped):
  ``uint8`` as is; other integer dtypes when every value is in ``[0, 255]``; floats when every value
  is in ``[0, 1]`` (scaled by 255 and rounded);
* a torch tensor with the same dtype rules, ``[H, W]``, ``[C, H, W]`` or ``[H, W, C]``; when both
  readings fit (e.g. ``[3, 5, 3]``) it is read as ``[C, H, W]``, torch's convention.

Every image must be at least ``MIN_SIDE`` pixels on each side and at most ``max_pixels`` pixels.
Problems with a source raise ``ImageLoadError`` (a ``ValueError``) naming the source and the cause.
The caller's array or tensor is never modified.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 100_000_000
"""Default limit on width × height (100 megapixels), a guard against decompression bombs."""

MIN_SIDE = 2
"""Smallest accepted height and width."""

_CHANNELS = (1, 3, 4)

ImageSource = Union[str, Path, bytes, Image.Image, np.ndarray, torch.Tensor]


class ImageLoadError(ValueError):
    """An image source that cannot be turned into an RGB array (unreadable, corrupt, wrong shape or size)."""


class ImageTooLargeError(ImageLoadError):
    """An image with more than ``max_pixels`` pixels (refused before its pixels are decoded)."""


def _check_size(height: int, width: int, name: str, max_pixels: int) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ImageLoadError(f"image {name} is {width}x{height} (WxH); each side must be at least {MIN_SIDE} pixels")
    if height * width > max_pixels:
        raise ImageTooLargeError(
            f"image {name} is {width}x{height} (WxH) = {height * width} pixels, more than max_pixels={max_pixels}; "
            "refusing to decode it (possible decompression bomb). Downscale it or pass a larger max_pixels"
        )


def _open(source: str | Path | bytes, name: str) -> Image.Image:
    """Open a file or encoded bytes, reading the header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"refusing to decode image {name} (possible decompression bomb): {error}") from error
    except UnidentifiedImageError as error:
        raise ImageLoadError(f"cannot decode image {name}: not a recognised image format") from error
    except OSError as error:
        raise ImageLoadError(f"cannot read image {name}: {error.strerror or error}") from error
    except (SyntaxError, ValueError) as error:
        raise ImageLoadError(f"cannot decode image {name}: the header is corrupt ({error})") from error


def _from_pil(image: Image.Image, name: str, max_pixels: int) -> np.ndarray:
    width, height = image.size
    _check_size(height, width, name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(f"cannot decode image {name}: the file is corrupt or truncated ({error})") from error
    return np.array(rgb, dtype=np.uint8)


def _from_tensor(tensor: torch.Tensor, name: str) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.ndim == 3:
        channels_first = tensor.shape[0] in _CHANNELS
        channels_last = tensor.shape[-1] in _CHANNELS
        if channels_first:
            tensor = tensor.permute(1, 2, 0)
        elif not channels_last:
            raise ImageLoadError(
                f"image {name} must be [C, H, W] or [H, W, C] with C in {_CHANNELS}, got shape {tuple(tensor.shape)}"
            )
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ImageLoadError(f"image {name} has unsupported dtype {tensor.dtype}; use uint8 or float in [0, 1]")
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.numpy()


def _from_array(array: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ImageLoadError(f"image {name} must be [H, W] or [H, W, C], got shape {array.shape}")
    if array.shape[2] not in _CHANNELS:
        hint = " (it looks like [C, H, W]; numpy images are [H, W, C])" if array.shape[0] in _CHANNELS else ""
        raise ImageLoadError(
            f"image {name} must have 1, 3 or 4 channels, got {array.shape[2]} (shape {array.shape}){hint}"
        )
    _check_size(array.shape[0], array.shape[1], name, max_pixels)
    kind = array.dtype.kind
    if kind == "f":
        if not np.isfinite(array).all():
            raise ImageLoadError(f"float image {name} must have finite values in [0, 1], got NaN or inf")
        if array.min() < 0 or array.max() > 1:
            raise ImageLoadError(
                f"float image {name} must have values in [0, 1], got range [{array.min()}, {array.max()}]; "
                "pass uint8 or divide by 255"
            )
        array = np.round(array.astype(np.float64) * 255.0)
    elif kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImageLoadError(
                f"integer image {name} ({array.dtype}) must have values in [0, 255], "
                f"got range [{array.min()}, {array.max()}]"
            )
    else:
        raise ImageLoadError(f"image {name} has unsupported dtype {array.dtype}; use uint8 or float in [0, 1]")
    array = array.astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load ``source`` (see the module docstring) → a new ``uint8`` ``[H, W, 3]`` RGB array."""
    if isinstance(source, (str, Path, bytes)):
        name = "<bytes>" if isinstance(source, bytes) else repr(str(source))
        with _open(source, name) as image:
            return _from_pil(image, name, max_pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source, f"<PIL.Image {source.mode} {source.size[0]}x{source.size[1]}>", max_pixels)
    if isinstance(source, torch.Tensor):
        return _from_array(_from_tensor(source, "<tensor>"), "<tensor>", max_pixels)
    if isinstance(source, np.ndarray):
        return _from_array(source, "<array>", max_pixels)
    raise ImageLoadError(
        f"cannot load an image from {type(source).__name__}; pass a path, bytes, PIL.Image, numpy array or torch tensor"
    )
