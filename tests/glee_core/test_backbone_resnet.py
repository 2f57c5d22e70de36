"""ResNet backbone: state-dict layout against the official manifests, parity with the oracle's backbone outputs."""
from __future__ import annotations

import json

import pytest
import torch

from glee_core.modeling.backbones.resnet import ResNet
from glee_core.modeling.layers import set_norm_folding
from tests.conftest import REFERENCE_DIR, assert_close, load_case, require_reference, seeded_state

TINY_KWARGS = dict(depth=50, stem_out_channels=16, res2_out_channels=32, width_per_group=8)
LITE_R50_KWARGS = dict(depth=50, stem_out_channels=64, res2_out_channels=256, width_per_group=64)


def read_manifest(preset: str, prefix: str) -> dict[str, tuple[list[int], str]]:
    """``<preset>_state_dict.tsv`` rows under ``prefix`` -> {name without prefix: (shape, dtype)}."""
    require_reference()
    rows = (REFERENCE_DIR / f"{preset}_state_dict.tsv").read_text().splitlines()[1:]
    out = {}
    for row in rows:
        name, shape, dtype = row.split("\t")[:3]
        if name.startswith(prefix):
            out[name[len(prefix):]] = (json.loads(shape), dtype)
    return out


def assert_matches_manifest(module: torch.nn.Module, preset: str, prefix: str) -> None:
    expected = read_manifest(preset, prefix)
    actual = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()}
    assert sorted(actual) == sorted(expected), (
        f"missing {sorted(set(expected) - set(actual))[:5]}, extra {sorted(set(actual) - set(expected))[:5]}")
    mismatched = {k: (actual[k], expected[k]) for k in expected if actual[k] != expected[k]}
    assert not mismatched, f"shape/dtype mismatches: {list(mismatched.items())[:5]}"


@pytest.mark.parametrize("preset, kwargs", [("tiny", TINY_KWARGS), ("lite_r50", LITE_R50_KWARGS)])
def test_state_dict_matches_manifest(preset, kwargs):
    with torch.device("meta"):
        model = ResNet(**kwargs)
    assert_matches_manifest(model, preset, "glee.backbone.")


def _backbone_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}


def test_tiny_parity(tiny_state):
    case = load_case("a_category_det")
    model = ResNet(**TINY_KWARGS).eval()
    model.load_state_dict(_backbone_weights(tiny_state))
    with torch.no_grad():
        out = model(case["input.image"])
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, feat in out.items():
        assert_close(feat, case[f"backbone.{name}"], name=name)
    assert model.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert model.out_channels == {"res2": 32, "res3": 64, "res4": 128, "res5": 256}
    assert out["res5"].is_contiguous(memory_format=torch.channels_last)
    model.channels_last = False  # the official NCHW layout: same features, plain contiguous
    set_norm_folding(model, False)  # and the official conv-then-norm passes
    with torch.no_grad():
        nchw = model(case["input.image"])
    for name, feat in nchw.items():
        assert feat.is_contiguous() and not feat.is_contiguous(memory_format=torch.channels_last)
        assert_close(feat, case[f"backbone.{name}"], name=f"{name} (NCHW)")
        torch.testing.assert_close(out[name], feat, rtol=1e-5, atol=1e-5 * float(feat.abs().max()))


@pytest.mark.slow
def test_lite_r50_parity():
    case = load_case("lite_r50_a_category")
    model = ResNet(**LITE_R50_KWARGS).eval()
    model.load_state_dict(_backbone_weights(seeded_state("lite-r50")))
    with torch.no_grad():
        out = model(case["input.image"])
    for name in ("res4", "res5"):
        assert_close(out[name], case[f"backbone.{name}"], name=name)


def test_variants_and_validation():
    torch.manual_seed(0)
    r18 = ResNet(depth=18, stem_out_channels=8, res2_out_channels=64, norm="BN", out_features=("res3",),
                 freeze_at=2).eval()
    assert not hasattr(r18, "res4")
    assert all(not p.requires_grad for p in [*r18.stem.parameters(), *r18.res2.parameters()])
    assert all(p.requires_grad for p in r18.res3.parameters())
    assert r18(torch.randn(1, 3, 64, 64))["res3"].shape == (1, 128, 8, 8)
    dilated = ResNet(depth=50, stem_out_channels=8, res2_out_channels=16, width_per_group=4, num_groups=2,
                     stride_in_1x1=True, res5_dilation=2).eval()
    assert dilated.out_strides["res5"] == 16
    assert dilated(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 128, 4, 4)
    with pytest.raises(ValueError, match="expects images"):
        r18(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=42)
