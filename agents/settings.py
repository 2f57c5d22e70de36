"""What a tool server may do: numeric ``Limits`` and the file/network ``Access`` policy, safe by default."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Limits:
    """Upper bounds on one tool call; inputs over a bound are refused with a ``too_large`` error.

    Attributes:
        max_image_pixels: width × height of one image (checked from the header, before decoding).
        max_image_bytes: encoded size of one image (file, data URL or download).
        max_categories: category names in one call.
        max_text_chars: characters of one category name or referring expression.
        max_prompts: points + boxes of one visual prompt or refine call; also referring expressions of one
            refer call.
        max_batch_images: images in the 'images' list of one detect, segment or refer call.
        max_video_frames: frames of one video.
        max_video_pixels: pixels of one video's frames together (width x height summed; decoded RGB takes 3
            bytes each).
        max_objects: objects returned per image (a larger ``max_objects`` argument is capped to it).
        timeout_s: seconds one call may run before it is answered with a ``timeout`` error.
        max_handles: image/object/overlay handles kept per toolkit (least recently used dropped first); one
            ``gleekit serve`` process is one toolkit, shared by all its clients.
        handle_ttl_s: seconds a handle lives after its last use.
    """

    max_image_pixels: int = 25_000_000
    max_image_bytes: int = 50 * 2**20
    max_categories: int = 1000
    max_text_chars: int = 500
    max_prompts: int = 64
    max_batch_images: int = 16
    max_video_frames: int = 300
    max_video_pixels: int = 400_000_000
    max_objects: int = 100
    timeout_s: float = 120.0
    max_handles: int = 512
    handle_ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class Access:
    """Where images may come from besides data URLs and handles.

    ``allowed_roots``: folders whose files (after resolving symbolic links) may be read; none by default,
    so a server reads no file until it is told which folders are safe. ``allow_urls``: download http(s)
    images (off by default).
    """

    allowed_roots: tuple[Path, ...] = field(default=())
    allow_urls: bool = False

    def __post_init__(self) -> None:
        roots = []
        for root in self.allowed_roots:
            real = Path(os.path.realpath(root))
            if not real.is_dir():
                raise ValueError(f"allowed root {str(root)!r} is not an existing folder")
            roots.append(real)
        object.__setattr__(self, "allowed_roots", tuple(roots))

    @classmethod
    def of(cls, allowed_roots: Iterable[str | Path] = (), allow_urls: bool = False) -> "Access":
        return cls(tuple(Path(r) for r in allowed_roots), allow_urls)
