"""Turn an image reference from a tool call into pixels, safely.

A reference is, in this order: a handle (``img_3``); a ``data:`` URL (base64); an ``http(s)://`` URL
(only when downloads are allowed); a bare base64 string (64+ characters of the base64 alphabet); else a
file path, which must resolve — symbolic links followed — to a file inside an allowed folder. ``..``
components are refused outright. Sizes are checked before anything is decoded: encoded bytes against
``Limits.max_image_bytes``, pixels (from the header) against ``Limits.max_image_pixels``. Python callers may
also register pixels they already hold (an array), under the same pixel limit.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from agents.errors import BadArgument, NotFound, TooLarge
from agents.handles import HandleStore, is_handle
from agents.settings import Access, Limits
from glee_core.image_io import ImageLoadError, ImageTooLargeError, load_image
from glee_core.video_io import IMAGE_SUFFIXES, VideoReadError, frame_files

_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}\s*$")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
DOWNLOAD_TIMEOUT_S = 20.0


class ImageResolver:
    """Loads referenced images under an ``Access`` policy and ``Limits``; registers them as handles."""

    def __init__(self, store: HandleStore, limits: Limits, access: Access):
        self.store, self.limits, self.access = store, limits, access

    def image(self, ref: str | np.ndarray) -> tuple[str, np.ndarray]:
        """(handle, uint8 [H, W, 3] RGB) for one reference or in-memory uint8 [H, W, 3] RGB pixels (from Python,
        never from a tool call); a new image gets a new handle."""
        if isinstance(ref, np.ndarray):
            self._check_array(ref)
            return self.store.add("img", ref), ref
        ref = ref.strip()
        if is_handle(ref):
            return ref, self.store.get(ref, "img")
        pixels = self.pixels(ref)
        return self.store.add("img", pixels), pixels

    def pixels(self, ref: str) -> np.ndarray:
        """uint8 [H, W, 3] RGB for a reference (handles included), without registering it."""
        ref = ref.strip()
        if not ref:
            raise BadArgument("the image reference is empty: give a handle ('img_1'), a file path or a data: URL")
        if is_handle(ref):
            return self.store.get(ref, "img")
        return self._decode(self._encoded(ref), ref)

    def folder_frames(self, folder: str) -> list[Path]:
        """The image files of a frame folder, in name order (at most ``Limits.max_video_frames``)."""
        path = self.resolve_path(folder)
        if not path.is_dir():
            raise BadArgument(f"video {folder!r} is not a folder; give a folder of frame images or a 'frames' list")
        try:
            frames = frame_files(path)
        except VideoReadError:
            raise NotFound(f"no frame images ({', '.join(IMAGE_SUFFIXES)}) in folder {folder!r}") from None
        if len(frames) > self.limits.max_video_frames:
            raise TooLarge(f"video {folder!r} has {len(frames)} frames; at most {self.limits.max_video_frames}")
        return frames

    def resolve_path(self, text: str) -> Path:
        """The real path of ``text`` inside an allowed folder (relative paths are tried under each)."""
        roots = self.access.allowed_roots
        if not roots:
            raise BadArgument("file paths are disabled on this server (no allowed folders): pass the image as a "
                              "data: URL or a handle, or start the server with --allow-root DIR")
        if "\x00" in text:
            raise BadArgument("the path contains a NUL character")
        path = Path(text)
        if ".." in path.parts:
            raise BadArgument(f"'..' is not allowed in paths, got {text[:200]!r}")
        allowed = ", ".join(str(r) for r in roots)
        if path.is_absolute() and not (_inside(path, roots) or _inside(Path(os.path.realpath(path)), roots)):
            raise BadArgument(f"path {text[:200]!r} is outside the allowed folders ({allowed})")
        for candidate in [path] if path.is_absolute() else [root / path for root in roots]:
            try:
                present = candidate.exists() or candidate.is_symlink()
                real = Path(os.path.realpath(candidate))
            except OSError as error:  # e.g. a name too long for the file system
                raise BadArgument(f"unusable path {text[:200]!r}: {error.strerror}") from None
            if present:
                if not _inside(real, roots):
                    raise BadArgument(f"path {text[:200]!r} leads outside the allowed folders ({allowed}) "
                                      "through a symbolic link")
                if real.exists():
                    return real
        raise NotFound(f"no file {text[:200]!r} in the allowed folders ({allowed})")

    # ------------------------------------------------------------------ internals
    def _encoded(self, ref: str) -> bytes:
        scheme = _SCHEME.match(ref)
        if ref.startswith("data:"):
            return self._data_url(ref)
        if scheme and scheme.group(1).lower() in ("http", "https"):
            return self._download(ref)
        if scheme and len(scheme.group(1)) > 1 and "://" in ref:
            raise BadArgument(f"unsupported URL scheme {scheme.group(1)!r}: use a path, a data: URL or a handle")
        if len(ref) >= 64 and _BASE64.match(ref):
            return self._base64(ref)
        return self._file(ref)

    def _check_bytes(self, size: int, what: str) -> None:
        if size > self.limits.max_image_bytes:
            raise TooLarge(f"{what} is {size} bytes; at most {self.limits.max_image_bytes} bytes are accepted")

    def _base64(self, text: str) -> bytes:
        self._check_bytes(len(text) * 3 // 4, "the base64 image")
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise BadArgument("the image is not valid base64") from None

    def _data_url(self, url: str) -> bytes:
        header, comma, payload = url.partition(",")
        if not comma:
            raise BadArgument("malformed data: URL (no ','); expected 'data:image/png;base64,<data>'")
        if not header.endswith(";base64"):
            raise BadArgument("only base64 data: URLs are accepted ('data:image/png;base64,<data>')")
        return self._base64(payload)

    def _download(self, url: str) -> bytes:
        if not self.access.allow_urls:
            raise BadArgument("downloading images is disabled on this server: pass a path, a data: URL or a "
                              "handle, or start the server with --allow-urls")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (scheme checked)
                data = response.read(self.limits.max_image_bytes + 1)
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise NotFound(f"could not download {url[:200]!r}: {getattr(error, 'reason', error)}") from None
        self._check_bytes(len(data), f"the image at {url[:200]!r}")
        return data

    def _file(self, text: str) -> bytes:
        path = self.resolve_path(text)
        if not path.is_file():
            raise BadArgument(f"{text[:200]!r} is not a file")
        self._check_bytes(path.stat().st_size, f"file {text[:200]!r}")
        try:
            return path.read_bytes()
        except OSError as error:
            raise NotFound(f"cannot read {text[:200]!r}: {error.strerror}") from None

    def _check_array(self, pixels: np.ndarray) -> None:
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise BadArgument(f"in-memory images must be uint8 [H, W, 3] RGB, got {pixels.dtype} {list(pixels.shape)}")
        if pixels.shape[0] * pixels.shape[1] > self.limits.max_image_pixels:
            raise TooLarge(f"the image has {pixels.shape[0] * pixels.shape[1]} pixels; at most "
                           f"{self.limits.max_image_pixels} are accepted")

    def _decode(self, data: bytes, ref: str) -> np.ndarray:
        try:
            return load_image(data, max_pixels=self.limits.max_image_pixels)
        except ImageTooLargeError as error:
            raise TooLarge(str(error)) from None
        except ImageLoadError as error:
            shown = ref if len(ref) <= 80 else ref[:40] + "…"
            raise BadArgument(f"{shown!r} is not a readable image: {error}") from None


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)
