"""Frames of a video, from a folder of images, a video file or any iterable of images, one at a time.

* a folder: its image files (``IMAGE_SUFFIXES``) in name order;
* a video file: decoded with PyAV (``pip install av``; the wheels carry FFmpeg, no system install needed);
* a list, tuple or generator of image sources (paths, arrays, PIL images, tensors).

Frames are yielded lazily as uint8 ``[H, W, 3]`` RGB, so a caller that processes them as they come keeps
what it has done when a later frame fails. A frame that cannot be read stops the video with a
``VideoReadError`` naming its index (and file): frames are never skipped silently, because skipping would
shift every later frame index. ``max_frames`` bounds the length; the frame after the limit raises.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

import numpy as np

from glee_core.image_io import ImageLoadError, ImageSource, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VideoSource = Union[str, Path, Iterable[ImageSource]]


class VideoReadError(ValueError):
    """A video or one of its frames that cannot be read; the message names the frame index."""


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frame folder, in name order."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VideoReadError(f"no frame images ({', '.join(IMAGE_SUFFIXES)}) in folder {str(folder)!r}")
    return files


def iter_frames(video: VideoSource, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of ``video`` (see the module docstring) as uint8 [H, W, 3] RGB arrays."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if isinstance(video, (str, Path)):
        path = Path(video)
        if path.is_dir():
            frames: Iterator[np.ndarray] = _read_sources(frame_files(path))
        elif path.is_file():
            frames = _decode_file(path)
        else:
            raise VideoReadError(f"video {str(video)!r} does not exist (give a folder of frames or a video file)")
    elif isinstance(video, (bytes, np.ndarray)) or hasattr(video, "detach"):
        raise VideoReadError(f"a video must be a folder, a file or a sequence of frames, got one {type(video).__name__}")
    else:
        frames = _read_sources(video)
    for index, frame in enumerate(frames):
        if max_frames is not None and index >= max_frames:
            raise VideoReadError(f"the video has more than max_frames={max_frames} frames; frames 0..{max_frames - 1} "
                                 "were read (raise max_frames or cut the video)")
        yield frame


def _read_sources(sources: Iterable[ImageSource]) -> Iterator[np.ndarray]:
    for index, source in enumerate(sources):
        try:
            yield load_image(source)
        except ImageLoadError as error:
            raise VideoReadError(f"frame {index} cannot be read: {error}") from None


def _decode_file(path: Path) -> Iterator[np.ndarray]:
    try:
        import av
    except ImportError:
        raise VideoReadError(f"reading video files needs PyAV: pip install av (or gleekit[video]); or pass a folder "
                             f"of frames instead of {str(path)!r}") from None
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoReadError(f"cannot open video {str(path)!r}: {error}") from None
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{str(path)!r} has no video stream")
        index = 0
        try:
            for frame in container.decode(video=0):
                yield np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                index += 1
        except av.error.FFmpegError as error:
            raise VideoReadError(f"frame {index} of {str(path)!r} cannot be decoded: {error}") from None
        if index == 0:
            raise VideoReadError(f"video {str(path)!r} has no frames")
