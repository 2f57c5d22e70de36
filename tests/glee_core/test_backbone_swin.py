"""Swin backbone: state-dict layout against the Plus manifest, Swin-L parity, odd input sizes."""
from __future__ import annotations

import pytest
import torch

from glee_core.modeling.backbones import build_backbone
from glee_core.modeling.backbones.swin import SwinTransformer, shifted_window_mask
from tests.conftest import assert_close, load_case, seeded_state
from tests.glee_core.test_backbone_resnet import _backbone_weights, assert_matches_manifest

PLUS_SWINL_KWARGS = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12,
                         pretrain_img_size=384, drop_path_rate=0.3)
SMALL_KWARGS = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)


def test_state_dict_matches_manifest():
    with torch.device("meta"):
        model = SwinTransformer(**PLUS_SWINL_KWARGS)
    assert_matches_manifest(model, "plus_swinl", "glee.backbone.")


def test_relative_position_index_is_kept_when_checkpoint_lacks_it():
    torch.manual_seed(0)
    model = SwinTransformer(**SMALL_KWARGS)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("relative_position_index")}
    index = model.layers[0].blocks[0].attn.relative_position_index.clone()
    assert index[0, 0] == 84 and index[0, -1] == 0 and index[-1, 0] == 168
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.layers[0].blocks[0].attn.relative_position_index, index)


def test_shifted_window_mask_regions():
    mask = shifted_window_mask(8, 8, 4, 2, torch.zeros(()))
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window holds one region only
    assert (mask[3] != 0).sum() == 16 * 16 - 4 * 4 * 4  # bottom-right window: four 2x2 regions


@pytest.mark.slow
def test_plus_swinl_parity():
    case = load_case("plus_swinl_a_category")
    model = SwinTransformer(**PLUS_SWINL_KWARGS).eval()
    model.load_state_dict(_backbone_weights(seeded_state("plus-swinl")))  # the seeded file has no constants: the computed index is kept
    with torch.no_grad():
        out = model(case["input.image"])
    for name in ("res4", "res5"):
        assert_close(out[name], case[f"backbone.{name}"], name=name)


def test_odd_input_size_and_batch_consistency():
    torch.manual_seed(0)
    model = build_backbone("swin", **SMALL_KWARGS).eval()
    images = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        out = model(images)
        single = model(images[1:])
    expected = {"res2": (16, 18, 23), "res3": (32, 9, 12), "res4": (64, 5, 6), "res5": (128, 3, 3)}
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == expected
    assert model.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    for name in expected:
        assert_close(single[name][0], out[name][1], atol=1e-5, name=name)
    with pytest.raises(ValueError, match="expects images"):
        model(images[:, :2])


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match="known backbones: .*resnet.*swin"):
        build_backbone("vgg")
