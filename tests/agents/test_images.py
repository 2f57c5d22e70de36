"""ImageResolver: the file policy (roots, '..', absolute paths, symbolic links), data URLs, base64, URLs, sizes."""
from __future__ import annotations

import base64
import os

import numpy as np
import pytest

from agents.errors import BadArgument, NotFound, TooLarge
from agents.handles import HandleStore
from agents.images import ImageResolver
from agents.settings import Access, Limits
from tests.agents.conftest import png_bytes
from tests.glee_core.test_image_io import forged_png

PIXELS = (np.arange(12 * 10 * 3) % 251).astype(np.uint8).reshape(12, 10, 3)


@pytest.fixture
def tree(tmp_path):
    """allowed/ (a.png, sub/b.png, out -> ../secret, linked.png -> ../secret/s.png) and secret/s.png."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "sub").mkdir(parents=True)
    secret.mkdir()
    for path in (allowed / "a.png", allowed / "sub" / "b.png", secret / "s.png"):
        path.write_bytes(png_bytes(PIXELS))
    os.symlink(secret, allowed / "out")
    os.symlink(secret / "s.png", allowed / "linked.png")
    (allowed / "notes.txt").write_text("hello")
    return allowed, secret


def resolver(*roots, limits=Limits(), allow_urls=False) -> ImageResolver:
    return ImageResolver(HandleStore(), limits, Access.of(roots, allow_urls))


def test_files_inside_the_roots_load_and_get_handles(tree):
    allowed, _ = tree
    images = resolver(allowed)
    for ref in ("a.png", "sub/b.png", str(allowed / "a.png"), "  a.png "):
        handle, pixels = images.image(ref)
        np.testing.assert_array_equal(pixels, PIXELS)
        assert handle.startswith("img_")
    assert images.image(handle)[0] == handle  # a handle resolves to itself, no new entry


@pytest.mark.parametrize("ref, message", [
    ("../secret/s.png", r"'\.\.' is not allowed"),
    ("sub/../../secret/s.png", r"'\.\.' is not allowed"),
    ("out/s.png", "leads outside the allowed folders .* through a symbolic link"),
    ("linked.png", "through a symbolic link"),
    ("/etc/passwd", "is outside the allowed folders"),
    ("notes.txt", "is not a readable image"),
    ("sub", "is not a file"),
    ("a.png\x00.jpg", "NUL character"),
    ("ftp://host/a.png", "unsupported URL scheme 'ftp'"),
    ("http://example.com/a.png", "downloading images is disabled"),
    ("data:image/png,abc", "only base64 data: URLs"),
    ("data:image/png;base64", r"malformed data: URL \(no ','\)"),
    ("data:image/png;base64,@@@@", "not valid base64"),
    ("x" * 300 + ".png", "unusable path"),
])
def test_refused_references(tree, ref, message):
    allowed, secret = tree
    with pytest.raises(BadArgument, match=message):
        resolver(allowed).image(ref)


def test_secret_absolute_path_is_refused_even_if_it_exists(tree):
    allowed, secret = tree
    with pytest.raises(BadArgument, match="outside the allowed folders"):
        resolver(allowed).image(str(secret / "s.png"))


def test_missing_file_and_no_roots(tree):
    allowed, _ = tree
    with pytest.raises(NotFound, match="no file 'nothing.png' in the allowed folders"):
        resolver(allowed).image("nothing.png")
    with pytest.raises(BadArgument, match="file paths are disabled on this server"):
        resolver().image("a.png")
    with pytest.raises(ValueError, match="is not an existing folder"):
        resolver(allowed / "a.png")


def test_data_url_and_bare_base64():
    encoded = base64.b64encode(png_bytes(PIXELS)).decode()
    images = resolver()
    np.testing.assert_array_equal(images.pixels("data:image/png;base64," + encoded), PIXELS)
    np.testing.assert_array_equal(images.pixels(encoded), PIXELS)
    with pytest.raises(BadArgument, match="is not a readable image"):
        images.pixels("data:image/png;base64," + base64.b64encode(b"not an image at all").decode())


def test_sizes_are_checked_before_decoding(tree):
    allowed, _ = tree
    bomb = "data:image/png;base64," + base64.b64encode(forged_png(30000, 30000)).decode()
    with pytest.raises(TooLarge, match="possible decompression bomb"):
        resolver().pixels(bomb)
    with pytest.raises(TooLarge, match=r"file 'a.png' is \d+ bytes; at most 20 bytes"):
        resolver(allowed, limits=Limits(max_image_bytes=20)).image("a.png")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(TooLarge, match=r"the base64 image is \d+ bytes; at most 100 bytes"):
        resolver(limits=Limits(max_image_bytes=100)).pixels(base64.b64encode(png_bytes(noise)).decode())


def test_urls_when_enabled_report_failures_as_not_found():
    with pytest.raises(NotFound, match="could not download"):
        resolver(allow_urls=True).pixels("http://127.0.0.1:9/none.png")


def test_frame_folders(tree):
    allowed, _ = tree
    images = resolver(allowed, limits=Limits(max_video_frames=1))
    assert [p.name for p in images.folder_frames("sub")] == ["b.png"]
    with pytest.raises(TooLarge, match="has 2 frames; at most 1"):
        images.folder_frames(".")
    with pytest.raises(BadArgument, match="is not a folder"):
        images.folder_frames("a.png")


def test_in_memory_pixels_get_a_handle_under_the_pixel_limit():
    images = resolver()
    handle, pixels = images.image(PIXELS)
    assert handle.startswith("img_") and pixels is PIXELS
    np.testing.assert_array_equal(images.pixels(handle), PIXELS)
    with pytest.raises(BadArgument, match=r"uint8 \[H, W, 3\] RGB, got float32 \[12, 10\]"):
        images.image(np.zeros((12, 10), np.float32))
    with pytest.raises(TooLarge, match="the image has 120 pixels; at most 100"):
        resolver(limits=Limits(max_image_pixels=100)).image(PIXELS)
