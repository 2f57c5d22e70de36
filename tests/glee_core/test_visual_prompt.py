"""Visual prompts: prompt masks, template crop and tokens, spatial prompt tokens (fixtures and hand-computed values)."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from glee_core.modeling.backbones.resnet import ResNet
from glee_core.modeling.visual_prompt import (
    FeatureFuser,
    aligned_bilinear,
    mask_box_xywh,
    prompt_mask_from_box,
    prompt_mask_from_mask,
    prompt_mask_from_point,
    prompt_points,
    spatial_prompt_tokens,
    template_crops,
    template_tokens,
)
from tests.conftest import assert_close, load_case
from tests.glee_core.test_backbone_resnet import TINY_KWARGS, assert_matches_manifest

VISUAL_CASES = ["c_visual_box", "c_visual_point"]
FUSER_CHANNELS = {"tiny": (64, 128, 256), "lite_r50": (512, 1024, 2048), "plus_swinl": (384, 768, 1536),
                  "pro_eva02l": (256, 256, 256)}


def case_prompt_mask(case) -> torch.Tensor:
    prompt = case.meta["prompts"]["visual_prompt"]
    image_hw, padded_hw = case.meta["images"][0]["resized_hw"], case.meta["padded_hw"]
    if prompt["type"] == "box":
        return prompt_mask_from_box(prompt["box_xyxy"], image_hw, padded_hw)
    return prompt_mask_from_point(prompt["point_xy"], image_hw, padded_hw)


@pytest.mark.parametrize("name", VISUAL_CASES)
def test_prompt_mask_matches_oracle(name):
    case = load_case(name)
    mask = case_prompt_mask(case)
    assert torch.equal(mask, case["vp.prompt_mask"])
    assert mask.sum().item() == case.meta["prompts"]["prompt_pixels"]


@pytest.mark.parametrize("name", VISUAL_CASES)
def test_template_crop_and_tokens_match_oracle(name, tiny_state):
    case = load_case(name)
    crops = template_crops(case["input.image"], case["vp.prompt_mask"], case.meta["prompts"]["visual_prompt"]["type"])
    assert_close(crops, case["vp.template_crop"], name="template_crop")
    backbone = ResNet(**TINY_KWARGS).eval()
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in tiny_state.items() if k.startswith("backbone.")})
    fuser = FeatureFuser(in_channels=FUSER_CHANNELS["tiny"]).eval()
    fuser.load_state_dict({k[len("sot_fuser."):]: v for k, v in tiny_state.items() if k.startswith("sot_fuser.")})
    with torch.no_grad():
        ref_feats, ref_masks = template_tokens(backbone, fuser, crops)
    assert_close(ref_feats, case["vp.ref_feats"], name="ref_feats")
    assert ref_masks.shape == (1, 1024) and ref_masks.all()


@pytest.mark.parametrize("name", VISUAL_CASES)
def test_spatial_token_geometry_matches_oracle(name, tiny_state):
    """The oracle's tokens minus pn_indicator[0] are exactly spanned by our bilinear sampling weights, level by level.

    Sampling one-hot feature maps (identity projection) gives each token's interpolation weights over the
    map's cells; the recorded tokens must be those weights times some per-cell vectors (residual ~1e-7), which
    pins the point coordinates, their order and align_corners=True. Pad masks are compared exactly.
    """
    case = load_case(name)
    for level, (h, w) in enumerate([(16, 20), (8, 10), (4, 5), (2, 3)]):
        identity = torch.eye(h * w, dtype=torch.float64)
        ((weights, pad_mask),) = spatial_prompt_tokens([identity.reshape(1, h * w, h, w)], case["vp.prompt_mask"],
                                                       [identity], torch.zeros(2, h * w, dtype=torch.float64))
        target = case[f"vp.prompt_tokens.{level}"][:, 0].double() - tiny_state["pn_indicator.weight"][0].double()
        weights = weights[:, 0]
        fitted = weights @ torch.linalg.lstsq(weights, target, driver="gelsd").solution
        assert (fitted - target).abs().max().item() < 1e-5, f"level {level}"
        assert torch.equal(pad_mask, case[f"vp.prompt_tokens_pad_mask.{level}"])


def test_spatial_tokens_hand_computed():
    """Two images on an 8x8 input, 3x3 maps (channel 0 = row, channel 1 = column, image 1 shifted by +1)."""
    rows, cols = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
    features = torch.stack([torch.stack([rows, cols]), torch.stack([rows, cols]) + 1])
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 4, 2] = masks[0, 7, 7] = masks[1, 0, 0] = True
    embed = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    pn = torch.tensor([[10.0, 20.0], [-100.0, -100.0]])
    ((tokens, pad_mask),) = spatial_prompt_tokens([features], masks, [embed], pn)
    # image 0: (y, x) = (4, 2) -> map (1.0, 0.5) -> [1, .5] @ embed = [2.5, 4]; (7, 7) -> (1.75, 1.75) -> [7, 10.5]
    # image 1: (0, 0) -> [1, 1] @ embed = [4, 6]; the padding slot samples (0, 0) without the indicator
    expected = torch.tensor([[[12.5, 24.0], [14.0, 26.0]], [[17.0, 30.5], [4.0, 6.0]]])
    assert torch.allclose(tokens, expected, atol=1e-6)
    assert pad_mask.tolist() == [[False, False], [False, True]]


def test_prompt_points_subsampling_is_seeded():
    mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    mask[0, :30, :20] = True
    all_points = prompt_points(mask)[0]
    assert all_points.shape == (512, 2)
    few = torch.zeros(1, 40, 40, dtype=torch.bool)
    few[0, 5:7, 3:6] = True
    expected = torch.tensor([[y, x] for y in (5, 6) for x in (3, 4, 5)]) / torch.tensor([40.0, 40.0])
    assert torch.equal(prompt_points(few, generator=torch.Generator().manual_seed(1))[0], expected)
    draw = [prompt_points(mask, max_points=100, generator=torch.Generator().manual_seed(7))[0] for _ in range(2)]
    assert torch.equal(draw[0], draw[1]) and draw[0].shape == (100, 2)
    pixels = {tuple(p) for p in (mask[0].nonzero().float() / 40).tolist()}
    assert {tuple(p) for p in draw[0].tolist()} <= pixels and len({tuple(p) for p in draw[0].tolist()}) == 100


def test_aligned_bilinear_hand_computed():
    x = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])
    # factor 2: 3x3 align_corners grid of the replicate-padded map, shifted by one pixel down/right
    expected = torch.tensor([[0, 0, 1, 2], [0, 0, 1, 2], [2, 2, 3, 4], [4, 4, 5, 6]], dtype=torch.float32)
    assert torch.allclose(aligned_bilinear(x, 2)[0, 0], expected)
    assert torch.equal(aligned_bilinear(x, 1), x)


@pytest.mark.parametrize("preset", sorted(FUSER_CHANNELS))
def test_fuser_state_dict_matches_manifest(preset):
    with torch.device("meta"):
        fuser = FeatureFuser(in_channels=FUSER_CHANNELS[preset])
    assert_matches_manifest(fuser, preset, "glee.sot_fuser.")


def test_fuser_output_size():
    fuser = FeatureFuser(in_channels=(4, 8, 16), channels=6)
    features = [torch.randn(2, c, 32 // s, 32 // s) for c, s in ((2, 1), (4, 4), (8, 8), (16, 16))]
    assert fuser(features).shape == (2, 6, 8, 8)
    with pytest.raises(ValueError, match="integer factor"):
        fuser([features[1], features[2], torch.randn(2, 16, 3, 3)])


def test_prompt_mask_builders():
    box = prompt_mask_from_box([1.5, 2, 4, 3.2], (6, 8), (8, 8))
    assert box.shape == (1, 8, 8) and box[0].nonzero().tolist() == [[y, x] for y in (2, 3) for x in (1, 2, 3)]
    point = prompt_mask_from_point((0, 0), (80, 120), (96, 128))
    assert point[0].nonzero().amax(0).tolist() == [1, 2] and point.sum().item() == 2 * 3
    scribble = torch.zeros(5, 6, dtype=torch.uint8)
    scribble[2, 1:5] = 1
    mask = prompt_mask_from_mask(scribble, (8, 8))
    assert mask.dtype == torch.bool and mask.sum().item() == 4 and mask_box_xywh(mask[0]) == (1, 2, 3, 0)


@pytest.mark.parametrize("box", [[4, 2, 4, 5], [5, 2, 3, 5], [-1, 0, 3, 3], [0, 0, 9, 3], [0, 0, 3, 7]])
def test_invalid_boxes_raise(box):
    with pytest.raises(ValueError, match="box"):
        prompt_mask_from_box(box, (6, 8), (8, 8))


@pytest.mark.parametrize("point", [(-1, 2), (8, 2), (3, 6)])
def test_invalid_points_raise(point):
    with pytest.raises(ValueError, match="outside"):
        prompt_mask_from_point(point, (6, 8), (8, 8))


def test_invalid_prompt_inputs_raise():
    with pytest.raises(ValueError, match="padded_hw"):
        prompt_mask_from_box([0, 0, 2, 2], (10, 8), (8, 8))
    with pytest.raises(ValueError, match="empty"):
        prompt_mask_from_mask(torch.zeros(4, 4), (8, 8))
    images = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="empty"):
        template_crops(images, torch.zeros(1, 8, 8, dtype=torch.bool), "box")
    with pytest.raises(ValueError, match="mode"):
        template_crops(images, torch.ones(1, 8, 8, dtype=torch.bool), "lasso")
    with pytest.raises(ValueError, match="bool"):
        spatial_prompt_tokens([torch.zeros(1, 2, 3, 3)], torch.ones(1, 8, 8), [torch.eye(2)], torch.zeros(2, 2))


def test_degenerate_scribble_crops_whole_image():
    images = torch.randn(1, 3, 32, 48)
    line = torch.zeros(1, 32, 48, dtype=torch.bool)
    line[0, 10, 5:30] = True
    expected = F.interpolate(images + line.float(), (256, 256), mode="bilinear", align_corners=False)
    assert torch.allclose(template_crops(images, line, "scribble"), expected)


def test_bfloat16_spatial_tokens_and_crops():
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, 8:12, 4:10] = True
    features = [torch.randn(1, 8, 4, 4, dtype=torch.bfloat16), torch.randn(1, 8, 2, 2, dtype=torch.bfloat16)]
    levels = spatial_prompt_tokens(features, masks, [torch.eye(8, dtype=torch.bfloat16)] * 2,
                                   torch.zeros(2, 8, dtype=torch.bfloat16))
    assert [t.dtype for t, _ in levels] == [torch.bfloat16] * 2 and levels[0][0].shape == (24, 1, 8)
    crops = template_crops(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16), masks, "point")
    assert crops.dtype == torch.bfloat16 and crops.shape == (1, 3, 256, 256)
