"""load_image: every accepted source gives the same uint8 RGB pixels; every bad source a clear error."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glee_core.image_io import MAX_PIXELS, ImageLoadError, ImageTooLargeError, load_image

RGB = np.random.default_rng(0).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (1-bit grey) but carries no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def png_bytes(array: np.ndarray, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=save_kwargs.pop("format", "PNG"), **save_kwargs)
    return buffer.getvalue()


def test_file_path_bytes_and_pil(tmp_path: Path):
    path = tmp_path / "image.png"
    path.write_bytes(png_bytes(RGB))
    for source in (path, str(path), path.read_bytes(), Image.open(path)):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
        np.testing.assert_array_equal(out, RGB)


def test_modes_are_converted_to_rgb():
    gray = RGB[:, :, 0]
    np.testing.assert_array_equal(load_image(Image.fromarray(gray)), np.repeat(gray[:, :, None], 3, axis=2))
    rgba = np.concatenate([RGB, np.full((6, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(png_bytes(rgba)), RGB)
    palette = Image.fromarray(RGB).convert("P")
    np.testing.assert_array_equal(load_image(palette), np.asarray(palette.convert("RGB")))


def test_exif_orientation_is_applied():
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = png_bytes(RGB, format="JPEG", exif=exif.tobytes(), quality=100)
    assert load_image(data).shape == (5, 6, 3)


def test_numpy_inputs_and_no_mutation():
    source = RGB.copy()
    out = load_image(source)
    assert not np.shares_memory(out, source)
    out[:] = 0
    np.testing.assert_array_equal(source, RGB)
    np.testing.assert_array_equal(load_image(RGB[:, :, 0]), np.repeat(RGB[:, :, :1], 3, axis=2))
    np.testing.assert_array_equal(load_image(RGB[:, :, :1]), np.repeat(RGB[:, :, :1], 3, axis=2))
    np.testing.assert_array_equal(load_image(np.concatenate([RGB, RGB[:, :, :1]], axis=2)), RGB)
    np.testing.assert_array_equal(load_image(RGB / 255.0), RGB)
    np.testing.assert_array_equal(load_image((RGB / 255.0).astype(np.float16)), RGB)
    np.testing.assert_array_equal(load_image(RGB.astype(np.int64)), RGB)
    np.testing.assert_array_equal(load_image(RGB[::-1]), RGB[::-1])
    np.testing.assert_array_equal(load_image(np.full((2, 2), 0.5)), np.full((2, 2, 3), 128))


def test_torch_inputs():
    chw = torch.from_numpy(RGB).permute(2, 0, 1)
    np.testing.assert_array_equal(load_image(chw), RGB)
    np.testing.assert_array_equal(load_image(torch.from_numpy(RGB)), RGB)
    np.testing.assert_array_equal(load_image(chw.float() / 255), RGB)
    np.testing.assert_array_equal(load_image(chw.to(torch.bfloat16) / 255).shape, RGB.shape)
    np.testing.assert_array_equal(load_image(torch.from_numpy(RGB[:, :, 0])), np.repeat(RGB[:, :, :1], 3, axis=2))
    tensor = chw.clone()
    load_image(tensor)[:] = 0
    assert torch.equal(tensor, chw)


def test_truncated_and_corrupt_files(tmp_path: Path):
    big = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = png_bytes(big)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = r"cannot decode image '.*truncated\.png': the file is corrupt or truncated"
    with pytest.raises(ImageLoadError, match=corrupt):
        load_image(truncated)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageLoadError, match=r"'.*notes\.png': not a recognised image format"):
        load_image(text)
    with pytest.raises(ImageLoadError, match=r"cannot read image '.*missing\.png': No such file"):
        load_image(tmp_path / "missing.png")
    assert issubclass(ImageLoadError, ValueError)


def test_decompression_bomb_refused_before_decoding():
    assert MAX_PIXELS == 100_000_000
    with pytest.raises(ImageTooLargeError, match="possible decompression bomb"):
        load_image(forged_png(20000, 20000))
    with pytest.raises(ImageLoadError, match=r"12000x10000 \(WxH\) = 120000000 pixels, more than max_pixels=100000000"):
        load_image(forged_png(12000, 10000))
    with pytest.raises(ImageLoadError, match="more than max_pixels=20"):
        load_image(RGB, max_pixels=20)
    assert load_image(RGB, max_pixels=30).shape == (6, 5, 3)


@pytest.mark.parametrize(
    "source, match",
    [
        (np.zeros((1, 1, 3), np.uint8), r"is 1x1 \(WxH\); each side must be at least 2 pixels"),
        (png_bytes(np.zeros((1, 8, 3), np.uint8)), r"is 8x1 \(WxH\)"),
        (np.zeros((4, 4, 2), np.uint8), r"must have 1, 3 or 4 channels, got 2 \(shape \(4, 4, 2\)\)"),
        (np.zeros((4, 4, 5), np.uint8), "must have 1, 3 or 4 channels, got 5"),
        (np.zeros((3, 8, 8), np.uint8), r"looks like \[C, H, W\]; numpy images are \[H, W, C\]"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"must be \[H, W\] or \[H, W, C\], got shape \(2, 4, 4, 3\)"),
        (np.zeros((4, 4, 3), bool), "unsupported dtype bool"),
        (np.full((4, 4, 3), 2.0), r"must have values in \[0, 1\], got range \[2.0, 2.0\]; pass uint8 or divide by 255"),
        (np.full((4, 4, 3), np.nan), "must have finite values in .*got NaN or inf"),
        (np.full((4, 4, 3), 300, np.uint16), r"values in \[0, 255\], got range \[300, 300\]"),
        (torch.zeros(2, 5, 5), r"must be \[C, H, W\] or \[H, W, C\] with C in \(1, 3, 4\), got shape \(2, 5, 5\)"),
        (torch.zeros(4, 4, 3, dtype=torch.bool), "unsupported dtype torch.bool"),
        ([[0, 1], [2, 3]], "cannot load an image from list"),
    ],
)
def test_bad_sources(source, match):
    with pytest.raises(ImageLoadError, match=match):
        load_image(source)
