"""Shared fixtures: a held-out shapeworld scene as PNG file / data URL, and one nano toolkit per module."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from agents.core import GleeToolkit
from train.data.shapeworld import generate_scene, scene_seed


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


@pytest.fixture(scope="session")
def scene():
    return generate_scene(scene_seed("test", 3), split="test")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, scene):
    root = tmp_path_factory.mktemp("images")
    (root / "scene.png").write_bytes(png_bytes(scene.image))
    return root


@pytest.fixture(scope="module")
def toolkit(image_root):
    toolkit = GleeToolkit(allowed_roots=[image_root])
    yield toolkit
    toolkit.close()
