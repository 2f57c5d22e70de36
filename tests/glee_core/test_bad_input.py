"""Bad inputs through the public API (GleePredictor, prompts, GleeModel) raise clear errors that
name the problem, and an over-long expression is truncated with a warning instead of failing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from glee_core.checkpoint import CheckpointError
from glee_core.image_io import ImageLoadError
from glee_core.modeling.glee import GleeModel
from glee_core.predictor import GleePredictor
from glee_core.structures import MAX_CATEGORIES, Categories, Expression, VisualPrompt
from tests.glee_core.test_image_io import forged_png, png_bytes
from tests.glee_core.test_predictor import WEIGHTS, predictor, single_thread, tiny_model  # noqa: F401 (fixtures)

IMAGE = np.random.default_rng(0).integers(0, 256, size=(128, 160, 3), dtype=np.uint8)
"""The size of the tiny fixture images (H x W)."""
CATEGORIES = Categories(["red square", "blue ellipse"])


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "image.png"
    path.write_bytes(png_bytes(IMAGE))
    return path


# ------------------------------------------------------------------ images
def test_truncated_image_file(predictor: GleePredictor, image_file: Path, tmp_path: Path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image_file.read_bytes()[:-200])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        predictor.predict(truncated, CATEGORIES)


def test_corrupt_image_file(predictor: GleePredictor, tmp_path: Path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image" * 10)
    with pytest.raises(ImageLoadError, match="not a recognised image format"):
        predictor.predict(garbage, CATEGORIES)
    with pytest.raises(ImageLoadError, match="cannot read image"):
        predictor.predict(tmp_path / "missing.png", CATEGORIES)


def test_one_pixel_image(predictor: GleePredictor):
    with pytest.raises(ImageLoadError, match="1x1 .*at least 2 pixels"):
        predictor.predict(np.zeros((1, 1, 3), np.uint8), CATEGORIES)


def test_forged_huge_png_header_is_refused_before_decoding(predictor: GleePredictor, tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(forged_png(20000, 20000))
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        predictor.predict(bomb, CATEGORIES)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        predictor.predict(forged_png(12000, 12000), CATEGORIES)


@pytest.mark.parametrize("array, message", [
    (np.zeros((32, 32, 5)), "1, 3 or 4 channels, got 5"),
    (np.zeros(3), r"must be \[H, W\] or \[H, W, C\], got shape \(3,\)"),
    (np.zeros((1, 32, 32, 3), np.uint8), r"must be \[H, W\] or \[H, W, C\]"),
    (np.zeros((32, 32, 3), np.complex64), "unsupported dtype complex64"),
    (np.full((32, 32, 3), 2.0), r"values in \[0, 1\]"),
    (np.full((32, 32, 3), 300, np.int32), r"values in \[0, 255\]"),
    (torch.zeros(5, 32, 32), r"\[C, H, W\] or \[H, W, C\] with C in"),
])
def test_wrong_arrays(predictor: GleePredictor, array, message: str):
    with pytest.raises(ImageLoadError, match=message):
        predictor.predict(array, CATEGORIES)


def test_extremely_elongated_image(predictor: GleePredictor):
    with pytest.raises(ValueError, match="too elongated"):
        predictor.predict(np.zeros((2, 1000, 3), np.uint8), CATEGORIES)


def test_bad_image_lists_and_prompts(predictor: GleePredictor):
    with pytest.raises(ValueError, match="no images given"):
        predictor.predict([], CATEGORIES)
    with pytest.raises(ImageLoadError, match="cannot load an image from int"):
        predictor.predict(7, CATEGORIES)
    with pytest.raises(TypeError,
                       match="prompt must be Categories, a Vocabulary, a Caption, Expression or VisualPrompt, got str"):
        predictor.predict(IMAGE, "red square")
    with pytest.raises(ValueError, match="visual prompts refer to one image"):
        predictor.predict([IMAGE, IMAGE], VisualPrompt(points=[[10, 10]]))
    with pytest.raises(ValueError, match="k must be >= 0"):
        predictor.predict(IMAGE, CATEGORIES, topk=-1)


# ------------------------------------------------------------------ text prompts
def test_empty_text_prompts():
    with pytest.raises(ValueError, match="at least one name"):
        Categories([])
    with pytest.raises(ValueError, match="must be a non-empty string"):
        Categories(["cat", "  "])
    with pytest.raises(ValueError, match="names must be a list of strings"):
        Categories("cat")
    with pytest.raises(ValueError, match="non-empty string"):
        Expression("")
    with pytest.raises(ValueError, match="no words left"):
        Expression("?!.")


def test_too_many_categories():
    names = [f"thing {i}" for i in range(MAX_CATEGORIES + 1)]
    with pytest.raises(ValueError, match=f"{MAX_CATEGORIES + 1} category names, more than max_categories"):
        Categories(names)


def test_very_long_expression_is_truncated(predictor: GleePredictor):
    text = " ".join(["the small red circle on the left"] * 1429)  # 10,003 words
    assert len(text.split()) >= 10_000
    with pytest.warns(UserWarning, match="longer than 77 CLIP tokens truncated"):
        dets = predictor.predict(IMAGE, Expression(text))
    assert len(dets) == 1 and dets.labels.tolist() == [0] and np.isfinite(dets.scores).all()


# ------------------------------------------------------------------ visual prompts
def test_box_with_x2_before_x1():
    with pytest.raises(ValueError, match=r"must have x2 > x1 and y2 > y1"):
        VisualPrompt(boxes=[[60, 30, 44, 42]])


@pytest.mark.parametrize("prompt, message", [
    (VisualPrompt(boxes=[[44, 30, 600, 42]]), r"box 0 .* lies outside the 128x160 \(HxW\) image"),
    (VisualPrompt(boxes=[[-10, 30, 60, 42]]), "box 0 .* lies outside"),
    (VisualPrompt(points=[[1000, 70]]), r"point 0 \[1000.0, 70.0\] lies outside"),
    (VisualPrompt(points=[[50, -1]]), "point 0 .* lies outside"),
    (VisualPrompt(scribbles=[[[10, 10], [500, 5]]]), "scribble 0 point .* lies outside"),
    (VisualPrompt(masks=np.ones((1, 10, 10), bool)), r"prompt masks are 10x10, expected the 128x160"),
    (VisualPrompt(points=[[50, 50]], point_labels=[0]), "background points"),
])
def test_visual_prompt_does_not_fit_the_image(predictor: GleePredictor, prompt: VisualPrompt, message: str):
    with pytest.raises(ValueError, match=message):
        predictor.predict(IMAGE, prompt)


def test_visual_prompt_masks_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"masks must be \[M, H, W\], got \(10, 10\)"):
        VisualPrompt(masks=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match=r"prompt masks \[0\] are empty"):
        VisualPrompt(masks=np.zeros((1, 10, 10), bool))


# ------------------------------------------------------------------ GleeModel
@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 1, 3, 64, 64), (1, 4, 64, 64)])
def test_forward_with_images_of_wrong_rank_or_channels(tiny_model: GleeModel, shape):
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\], got shape"):
        tiny_model(torch.zeros(shape), categories=["cat"])


def test_forward_argument_errors(tiny_model: GleeModel):
    images = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="normalised floats"):
        tiny_model(images.to(torch.uint8), categories=["cat"])
    with pytest.raises(ValueError, match="categories must be a list of strings, got the single string"):
        tiny_model(images, categories="cat")
    with pytest.raises(ValueError, match="expressions must be a list of strings"):
        tiny_model(images, expressions="the cat")
    with pytest.raises(ValueError, match="2 expressions for 1 images"):
        tiny_model(images, expressions=["a", "b"])
    with pytest.raises(ValueError, match="categories is empty"):
        tiny_model(images, categories=[])
    with pytest.raises(ValueError, match="give categories, expressions or visual_prompt_masks"):
        tiny_model(images)


def test_forward_with_too_small_images(tiny_model: GleeModel):
    with pytest.raises(ValueError, match=r"8x8 \(HxW\) are too small: .* fewer than the 40 queries"):
        tiny_model(torch.zeros(1, 3, 8, 8), categories=["cat"])


@pytest.mark.parametrize("shape", [(1, 64, 64), (128, 160), (2, 128, 160)])
def test_forward_with_visual_prompt_masks_of_the_wrong_shape(tiny_model: GleeModel, shape):
    with pytest.raises(ValueError, match=r"visual_prompt_masks must be \[B, Hp, Wp\] = \[1, 128, 160\]"):
        tiny_model(torch.zeros(1, 3, 128, 160), visual_prompt_masks=torch.ones(shape, dtype=torch.bool))


def test_forward_with_an_empty_visual_prompt_mask(tiny_model: GleeModel):
    with pytest.raises(ValueError, match="a visual prompt mask is empty"):
        tiny_model(torch.zeros(1, 3, 128, 160), visual_prompt_masks=torch.zeros(1, 128, 160, dtype=torch.bool))


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_of_the_wrong_preset():
    if not WEIGHTS.is_file():
        pytest.skip(f"tiny oracle weights not found at {WEIGHTS}")
    with pytest.raises(CheckpointError) as info:
        GleeModel.from_pretrained(WEIGHTS, preset="lite-r50")
    message = str(info.value)
    assert "missing: text_encoder.encoder.layers.2." in message
    assert "with a different shape: backbone.res2.0.conv1" in message
    assert "Check the preset" in message


def test_bad_checkpoint_sources(tmp_path: Path):
    weights = tmp_path / "weights.safetensors"
    save_file({"glee.pn_indicator.weight": torch.zeros(2, 256)}, str(weights))
    with pytest.raises(CheckpointError, match="pass preset="):
        GleeModel.from_pretrained(weights)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        GleePredictor.from_pretrained(broken, preset="tiny")
    with pytest.raises(CheckpointError, match="no weights are bundled for preset 'lite-r50'"):
        GleeModel.from_pretrained("lite-r50")
    with pytest.raises(CheckpointError, match="neither a model folder, a checkpoint file nor a preset name"):
        GleeModel.from_pretrained(tmp_path / "nothing-here")
