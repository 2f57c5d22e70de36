"""MaskDINOEncoder (pixel decoder with early fusion): state-dict layout against the official manifests, parity
with the tiny oracle's encoder / pixel-decoder intermediates, real-size encoder memory (category and referring;
plus-swinl and pro-eva02l marked slow), the early-fusion language-mask quirk, and a bfloat16 run."""
from __future__ import annotations

import json

import pytest
import torch

from glee_core.config import get_preset
from glee_core.modeling.backbones import build_backbone
from glee_core.modeling import early_fusion
from glee_core.modeling.early_fusion import VLFuse
from glee_core.modeling.pixel_decoder import MaskDINOEncoder
from tests.conftest import REFERENCE_DIR, assert_close, load_case, require_reference, seeded_state

RESNET_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
PRESET_KWARGS = {
    "tiny": dict(in_channels={"res2": 32, "res3": 64, "res4": 128, "res5": 256}, in_strides=RESNET_STRIDES,
                 dim_feedforward=128, num_encoder_layers=2),
    "lite_r50": dict(in_channels={"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}, in_strides=RESNET_STRIDES,
                     dim_feedforward=2048, num_encoder_layers=6),
    "plus_swinl": dict(in_channels={"res2": 192, "res3": 384, "res4": 768, "res5": 1536}, in_strides=RESNET_STRIDES,
                       dim_feedforward=2048, num_encoder_layers=6),
    "pro_eva02l": dict(in_channels={"p3": 256, "p4": 256, "p5": 256, "p6": 256},
                       in_strides={"p3": 8, "p4": 16, "p5": 32, "p6": 64},
                       transformer_in_features=("p3", "p4", "p5", "p6"), project_inputs=False,
                       dim_feedforward=2048, num_encoder_layers=6),
}
PREFIX = "pixel_decoder."


def _subtree(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}


def _lang(case) -> dict[str, torch.Tensor]:
    return {"hidden": case["fusion.lang_in"], "masks": case["fusion.lang_in_mask"]}


@pytest.mark.parametrize("preset", sorted(PRESET_KWARGS))
def test_state_dict_matches_manifest(preset):
    require_reference()
    expected = {}
    for row in (REFERENCE_DIR / f"{preset}_state_dict.tsv").read_text().splitlines()[1:]:
        name, shape, dtype = row.split("\t")[:3]
        if name.startswith("glee." + PREFIX):
            expected[name[len("glee." + PREFIX):]] = (json.loads(shape), dtype)
    with torch.device("meta"):
        model = MaskDINOEncoder(**PRESET_KWARGS[preset])
    actual = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert actual == expected, (f"missing {sorted(set(expected) - set(actual))[:5]}, "
                                f"extra {sorted(set(actual) - set(expected))[:5]}, "
                                f"different {[k for k in expected if k in actual and actual[k] != expected[k]][:5]}")


@pytest.fixture(scope="module")
def tiny_model(tiny_state) -> MaskDINOEncoder:
    model = MaskDINOEncoder(**PRESET_KWARGS["tiny"]).eval()
    model.load_state_dict(_subtree(tiny_state))
    return model


@pytest.fixture(scope="module")
def tiny_case():
    case = load_case("a_category_det")
    return case, {name: case[f"backbone.{name}"] for name in RESNET_STRIDES}


def test_tiny_parity_all_intermediates(tiny_model, tiny_case):
    case, features = tiny_case
    with torch.no_grad():
        out = tiny_model(features, _lang(case), return_intermediates=True)
    produced = dict(out.intermediates)
    produced["encoder.memory"] = out.memory
    produced["pixel_decoder.mask_features"] = out.mask_features
    produced.update({f"pixel_decoder.multi_scale.{i}": f for i, f in enumerate(out.multi_scale_features)})
    expected_names = [k for k in case.tensors if k.startswith(("encoder.", "pixel_decoder."))]
    assert sorted(expected_names) == sorted([*produced, "encoder.spatial_shapes"])
    for name, tensor in produced.items():
        assert_close(tensor, case[name], name=name)
    assert torch.equal(out.spatial_shapes, case["encoder.spatial_shapes"])
    assert out.spatial_shapes.tolist() == [[16, 20], [8, 10], [4, 5], [2, 3]]  # strides 8, 16, 32, 64
    with torch.no_grad():  # without a record nothing reads the fused language: its half is skipped, same memory
        assert torch.equal(tiny_model(features, _lang(case)).memory, out.memory)
    assert out.level_start_index.tolist() == [0, 320, 400, 420]


def test_tiny_without_language_skips_fusion(tiny_model, tiny_case):
    case, features = tiny_case
    with torch.no_grad():
        out = tiny_model(features, None, return_intermediates=True)
    assert not any(k.startswith("encoder.vl") for k in out.intermediates)
    assert_close(out.intermediates["encoder.src.0"], case["encoder.src.0"], name="src.0")
    assert (out.memory - case["encoder.memory"]).abs().max() > 1e-2


def test_tiny_bfloat16_run(tiny_state, tiny_case):
    case, features = tiny_case
    model = MaskDINOEncoder(**PRESET_KWARGS["tiny"]).eval()
    model.load_state_dict(_subtree(tiny_state))
    model.to(torch.bfloat16)
    lang = {"hidden": case["fusion.lang_in"].bfloat16(), "masks": case["fusion.lang_in_mask"]}
    with torch.no_grad():
        out = model({k: v.bfloat16() for k, v in features.items()}, lang)
    for name, got in (("encoder.memory", out.memory), ("pixel_decoder.mask_features", out.mask_features)):
        assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
        diff = (got.float() - case[name]).abs()
        assert diff.max() < 0.2 and diff.mean() < 0.02, f"{name}: max {diff.max():.3g} mean {diff.mean():.3g}"


def test_input_validation(tiny_model, tiny_case):
    case, features = tiny_case
    with pytest.raises(ValueError, match="missing backbone feature 'res2'"):
        tiny_model({k: v for k, v in features.items() if k != "res2"})
    with pytest.raises(ValueError, match="'res3' must be"):
        tiny_model({**features, "res3": features["res3"][:, :10]})
    with pytest.raises(ValueError, match="lang hidden"):
        tiny_model(features, {"hidden": case["fusion.lang_in"][..., :32], "masks": case["fusion.lang_in_mask"]})
    with pytest.raises(ValueError, match="project_inputs=False"):
        MaskDINOEncoder(**{**PRESET_KWARGS["tiny"], "project_inputs": False})


def test_level_orders_and_strides():
    torch.manual_seed(0)
    high2low = MaskDINOEncoder(**{**PRESET_KWARGS["tiny"], "feature_order": "high2low",
                                  "num_encoder_layers": 1}).eval()
    features = {name: torch.randn(1, c, 64 // s, 96 // s) for (name, c), s in
                zip(PRESET_KWARGS["tiny"]["in_channels"].items(), RESNET_STRIDES.values())}
    with torch.no_grad():
        out = high2low(features)
    assert out.spatial_shapes.tolist() == [[1, 2], [2, 3], [4, 6], [8, 12]]
    assert out.mask_features.shape == (1, 256, 16, 24)

    vit = MaskDINOEncoder(**{**PRESET_KWARGS["pro_eva02l"], "num_encoder_layers": 1}).eval()
    features = {f"p{i}": torch.randn(1, 256, -(-80 // 2 ** i), -(-144 // 2 ** i)) for i in range(3, 7)}
    with torch.no_grad():
        out = vit(features)
    assert out.spatial_shapes.tolist() == [[10, 18], [5, 9], [3, 5], [2, 3]]
    assert out.mask_features.shape == (1, 256, 10, 18)  # EVA02: mask features at stride 8
    assert [tuple(f.shape[-2:]) for f in out.multi_scale_features] == [(10, 18), (5, 9), (3, 5), (2, 3)]


def test_language_mask_quirk():
    """Official: the bool language mask is a no-op; ``mask_language=True`` gives the intended masking."""
    torch.manual_seed(0)
    fuse = VLFuse(img_dim=16, lang_dim=8, embed_dim=32, num_heads=4).eval()
    visual, lang = torch.randn(2, 6, 16), torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    lang_changed = lang.clone()
    lang_changed[1, 2:] = 3.0 * torch.randn(3, 8)  # padded tokens of the second prompt
    with torch.no_grad():
        official = fuse(visual, lang, mask)[0]
        assert torch.equal(official, fuse(visual, lang, None)[0])
        assert (fuse(visual, lang_changed, mask)[0][1] - official[1]).abs().max() > 1e-3
        fuse.b_attn.attn.mask_language = True
        masked = fuse(visual, lang, mask)[0]
        torch.testing.assert_close(masked[0], official[0])
        torch.testing.assert_close(fuse(visual, lang_changed, mask)[0], masked)


def test_fusion_per_slice_equals_batched_attention_and_trains():
    """The official sliced (and, without autograd, in-place) fusion equals a batched reference; gradients flow."""
    torch.manual_seed(1)
    fuse = VLFuse(img_dim=16, lang_dim=8, embed_dim=32, num_heads=4).eval()
    attn = fuse.b_attn.attn
    visual, lang = torch.randn(2, 6, 16), torch.randn(2, 5, 8)
    v, l = fuse.b_attn.layer_norm_v(visual), fuse.b_attn.layer_norm_l(lang)
    with torch.no_grad():
        delta_v, delta_l = attn._official(v, l, None)
        q = attn._heads(attn.v_proj(v) * attn.scale)
        logits = torch.bmm(q, attn._heads(attn.l_proj(l)).transpose(1, 2))
        probs_l = (logits.transpose(1, 2) - logits.transpose(1, 2).max(-1, keepdim=True)[0]).softmax(-1)
        expected_v = attn.out_v_proj(attn._merge(torch.bmm(logits.softmax(-1), attn._heads(attn.values_l_proj(l))), 2))
        expected_l = attn.out_l_proj(attn._merge(torch.bmm(probs_l, attn._heads(attn.values_v_proj(v))), 2))
    torch.testing.assert_close(delta_v, expected_v)
    torch.testing.assert_close(delta_l, expected_l)
    with_grad = attn._official(v, l, None)  # parameters require grad: the out-of-place path
    assert torch.equal(with_grad[0], delta_v) and torch.equal(with_grad[1], delta_l)
    with_grad[0].sum().backward()
    assert attn.v_proj.weight.grad is not None and attn.v_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("attention", ["gemm-blocks", "sdpa"])
@pytest.mark.parametrize("mask_language", [False, True])
def test_folded_fusion_equals_official(mask_language, attention, monkeypatch):
    """Eval-mode fusion (projections folded into the language side; the vision update by blocked GEMMs over all
    heads, several blocks here, or by fused attention) gives the official values, with and without the intended
    language mask, with or without the language half, and trains; where the logit clamp could bind, and in
    training with dropout, the official computation runs."""
    if attention == "sdpa":
        monkeypatch.setattr(early_fusion, "GEMM_ATTENTION_KEYS", 0)
    else:
        monkeypatch.setattr(early_fusion, "GEMM_ATTENTION_BLOCK", 40)  # 4 heads x 5 tokens: 2 vision rows a block
    torch.manual_seed(2)
    fuse = VLFuse(img_dim=16, lang_dim=8, embed_dim=48, num_heads=4, mask_language=mask_language).eval()
    attn = fuse.b_attn.attn
    for p in attn.parameters():  # non-zero biases, so the folded bias terms are exercised
        torch.nn.init.normal_(p, std=0.3)
    v, l = torch.randn(2, 7, 16), torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with torch.no_grad():
        official = attn._official(v, l, mask)
        folded = attn._folded(v, l, mask)
        assert folded is not None
        for got, want in zip(attn(v, l, mask), official):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for path in (attn._official, attn._folded):  # the vision half alone: same values, no language half
            vision_only = path(v, l, mask, with_language=False)
            assert vision_only[1] is None and torch.equal(vision_only[0], path(v, l, mask)[0])
        if mask_language:  # the padded tokens of the second prompt are masked on the vision side
            assert (official[0][1] - attn._official(v, l, None)[0][1]).abs().max() > 1e-4
        big = v * 1e4  # logits beyond the clamp: the folded form cannot promise the official values
        assert attn._folded(big, l, mask) is None
        assert torch.equal(attn(big, l, mask)[0], attn._official(big, l, mask)[0])
    grads = {}
    for path in ("_official", "_folded"):
        attn.zero_grad()
        out_v, out_l = getattr(attn, path)(v, l, mask)
        (out_v.square().sum() + out_l.sum()).backward()
        grads[path] = {n: p.grad.clone() for n, p in attn.named_parameters()}
    for name, grad in grads["_official"].items():
        torch.testing.assert_close(grads["_folded"][name], grad, rtol=1e-4, atol=1e-5, msg=name)
    fuse.train()
    torch.manual_seed(3)
    trained = attn(v, l, mask)
    torch.manual_seed(3)
    assert torch.equal(trained[0], attn._official(v, l, mask)[0])  # dropout: the official path


@pytest.mark.parametrize("preset", ["lite-r50", pytest.param("plus-swinl", marks=pytest.mark.slow),
                                    pytest.param("pro-eva02l", marks=pytest.mark.slow)])
def test_real_size_encoder_memory(preset):
    """Seeded real-size weights, from the image through the preset's backbone; category and referring cases.

    The referring prompt has 67 padded tokens that the official fusion attends (language-mask quirk).
    """
    key = preset.replace("-", "_")
    config = get_preset(preset)
    state = seeded_state(preset)
    backbone = build_backbone(config.backbone, **config.backbone_kwargs).eval()
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")},
                             strict=False)
    decoder = MaskDINOEncoder(**PRESET_KWARGS[key]).eval()
    decoder.load_state_dict(_subtree(state))
    del state
    for case_name in (f"{key}_a_category", f"{key}_b_referring"):
        case = load_case(case_name)
        with torch.no_grad():
            out = decoder(backbone(case["input.image"]), _lang(case))
        assert torch.equal(out.spatial_shapes, case["encoder.spatial_shapes"])
        assert_close(out.memory, case["encoder.memory"], name=f"{case_name} encoder.memory")
        stride = 8 if key == "pro_eva02l" else 4  # mask features at the finest pixel-decoder input
        assert out.mask_features.shape[-2:] == tuple(s // stride for s in case["input.image"].shape[-2:])


def test_encoder_layer_inference_blocks_equal_the_whole(monkeypatch):
    """Inference runs the post-attention rows in token blocks (a partial last block here); same values as one
    block, and as the autograd path."""
    from glee_core.modeling import pixel_decoder

    torch.manual_seed(4)
    layer = pixel_decoder.DeformableEncoderLayer(16, 32, 0.1, n_levels=2, n_heads=2, n_points=2).eval()
    shapes = torch.tensor([[4, 5], [2, 3]])
    starts = torch.tensor([0, 20])
    src, pos, ref = torch.randn(2, 26, 16), torch.randn(2, 26, 16), torch.rand(1, 26, 2, 2)
    with torch.no_grad():
        whole = layer(src, pos, ref, shapes, starts)
        monkeypatch.setattr(pixel_decoder, "FFN_BLOCK", 8)
        blocks = layer(src, pos, ref, shapes, starts)
    torch.testing.assert_close(blocks, whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer(src, pos, ref, shapes, starts).detach(), whole, rtol=1e-5, atol=1e-5)
