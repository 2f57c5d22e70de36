"""Fixture helpers for the reader tests: write json / placeholder images into tmp_path."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (4, 3)) -> Path:
    """A tiny placeholder PNG/JPEG at ``path`` (readers only check that images exist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def write_json(path: Path, data: Any, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding=encoding)
    return path


@pytest.fixture
def make_image() -> Callable[..., Path]:
    return write_image


@pytest.fixture
def make_json() -> Callable[..., Path]:
    return write_json
