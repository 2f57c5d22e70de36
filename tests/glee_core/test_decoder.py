"""Object decoder (``predictor``): parity with the official oracle, prompt-token self-attention, DN queries,
state-dict manifests."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from glee_core.modeling.decoder import (
    LABEL_ENCODER_SIZES,
    MaskDINODecoder,
    PromptMode,
    encoder_output_proposals,
)
from glee_core.modeling.decoder_layer import DeformableTransformerDecoderLayer, PromptTokens, prompt_self_attn_mask
from tests.conftest import REFERENCE_DIR, assert_close, load_case, require_reference, seeded_state

TINY_KWARGS = dict(num_queries=40, dim_feedforward=128, dec_layers=3)
REAL_KWARGS = dict(num_queries=300, dim_feedforward=2048, dec_layers=9)
PRESETS = {"tiny": TINY_KWARGS, "lite_r50": REAL_KWARGS, "plus_swinl": REAL_KWARGS, "pro_eva02l": REAL_KWARGS}
PREFIX = "predictor."


def _predictor_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}


@pytest.fixture(scope="module")
def tiny_decoder(tiny_state) -> MaskDINODecoder:
    model = MaskDINODecoder(**TINY_KWARGS)
    model.load_state_dict(_predictor_state(tiny_state), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def case_a():
    return load_case("a_category_det")


def _case_a_inputs(case):
    return [case[f"pixel_decoder.multi_scale.{lvl}"] for lvl in range(4)], case["pixel_decoder.mask_features"]


def _fixture_pairs(out, with_hs: bool, with_masks: bool) -> dict[str, torch.Tensor]:
    pairs = {
        "decoder.proposal_scores": out.proposal_scores, "decoder.proposal_index": out.proposal_index,
        "decoder.interm.logits": out.interm_logits, "decoder.interm.boxes": out.interm_boxes,
        "decoder.interm.scores": out.interm_scores, "decoder.references": out.references,
        "decoder.logits": out.layer_logits, "decoder.boxes": out.layer_boxes, "decoder.scores": out.layer_scores,
        "out.pred_logits": out.pred_logits, "out.pred_boxes": out.pred_boxes, "out.pred_scores": out.pred_scores,
        "out.pred_track_embed": out.pred_track_embed,
    }
    if with_hs:
        pairs["decoder.hs"] = out.hs
    if with_masks:
        pairs["decoder.interm.masks"] = out.interm_masks
        pairs["out.pred_masks"] = out.pred_masks
    return pairs


def _assert_fixture(case, out, with_hs: bool = True, with_masks: bool = True) -> None:
    for name, actual in _fixture_pairs(out, with_hs, with_masks).items():
        if name == "decoder.proposal_index":
            assert torch.equal(actual, case[name]), name
        else:
            assert_close(actual, case[name], atol=1e-4, name=name)


# --------------------------------------------------------------------------- parity
def test_tiny_category_parity(tiny_decoder, case_a):
    features, mask_features = _case_a_inputs(case_a)
    with torch.no_grad():
        out = tiny_decoder(features, mask_features, mode=PromptMode.CATEGORY,
                           class_embeddings=case_a["text.class_embeddings"], with_interm_masks=True)
        plain = tiny_decoder(features, mask_features, mode=PromptMode.CATEGORY,
                             class_embeddings=case_a["text.class_embeddings"])
    _assert_fixture(case_a, out)
    assert out.layer_masks[:-1] == [None] * 3, "in eval only the last layer predicts masks"
    assert out.denoising is None
    assert plain.interm_masks is None, "in eval the proposals' masks are predicted only when asked for"
    torch.testing.assert_close(plain.pred_masks, out.pred_masks, rtol=0, atol=0)


def test_multi_scale_features_are_the_encoder_memory(case_a):
    """The decoder consumes the multi-scale maps, which are the encoder memory split per level."""
    features, _ = _case_a_inputs(case_a)
    memory = torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1)
    assert torch.equal(memory, case_a["encoder.memory"])


def _memory_to_features(case) -> list[torch.Tensor]:
    memory = case["encoder.memory"]
    shapes = case["encoder.spatial_shapes"].tolist()
    chunks = memory.split([h * w for h, w in shapes], dim=1)
    return [c.transpose(1, 2).reshape(memory.shape[0], -1, h, w) for c, (h, w) in zip(chunks, shapes)]


@pytest.fixture(scope="module")
def lite_decoder() -> MaskDINODecoder:
    model = MaskDINODecoder(**REAL_KWARGS)
    model.load_state_dict(_predictor_state(seeded_state("lite-r50")), strict=True)
    return model.eval()


@pytest.mark.parametrize("name", ["lite_r50_a_category", "lite_r50_b_referring"] + [
    pytest.param(f"{preset}_{case}", marks=pytest.mark.slow)
    for preset in ("plus_swinl", "pro_eva02l") for case in ("a_category", "b_referring")
])
def test_real_size_parity(lite_decoder, name):
    """Real sizes (300 queries, 9 layers, seeded weights), fed from the stored encoder memory. The real cases do
    not store mask features, so masks are not compared; the referring case checks the prompt self-attention.
    The predictor's seeded weights depend only on the names, which are the same in every preset."""
    case = load_case(name)
    features = _memory_to_features(case)
    batch, _, height, width = case["input.image"].shape
    mask_features = torch.zeros(batch, 256, height // 4, width // 4)
    if "text.grounding_class" in case.tensors:
        prompt = dict(mode=PromptMode.REFERRING, grounding_class=case["text.grounding_class"],
                      text_prompt=PromptTokens(case["text.grounding_tokens"].transpose(0, 1),
                                               case["text.grounding_nonzero_mask"]))
    else:
        prompt = dict(mode=PromptMode.CATEGORY, class_embeddings=case["text.class_embeddings"])
    with torch.no_grad():
        out = lite_decoder(features, mask_features, **prompt)
    _assert_fixture(case, out, with_hs=False, with_masks=False)


def test_bf16_runs(tiny_decoder, case_a):
    features, mask_features = _case_a_inputs(case_a)
    model = MaskDINODecoder(**TINY_KWARGS)
    model.load_state_dict(tiny_decoder.state_dict())
    model = model.to(torch.bfloat16).eval()
    with torch.no_grad():
        out = model([f.bfloat16() for f in features], mask_features.bfloat16(),
                    class_embeddings=case_a["text.class_embeddings"].bfloat16())
    for t in (out.pred_logits, out.pred_boxes, out.pred_masks, out.pred_scores, out.pred_track_embed):
        assert t.dtype == torch.bfloat16 and torch.isfinite(t).all()
    assert (out.proposal_scores.float() - case_a["decoder.proposal_scores"]).abs().max() < 0.1


# --------------------------------------------------------------------------- two-stage proposals
def test_encoder_output_proposals_invalid_tokens():
    memory = torch.randn(2, 60 * 2 + 4, 8)
    out_memory, logits = encoder_output_proposals(memory, [(2, 60), (2, 2)])
    boxes = logits.sigmoid()
    # level 0: wh 0.05; x centres (i + 0.5) / 60 below 0.01 or above 0.99 are invalid (i = 0 and 59)
    invalid = torch.zeros(2, 124, dtype=torch.bool)
    invalid[:, [0, 59, 60, 119]] = True
    assert torch.equal(torch.isinf(logits).all(-1), invalid)
    assert torch.equal(out_memory[invalid], torch.zeros_like(out_memory[invalid]))
    assert torch.equal(out_memory[~invalid], memory[~invalid])
    assert_close(boxes[0, 1], torch.tensor([1.5 / 60, 0.25, 0.05, 0.05]), atol=1e-6)
    assert_close(boxes[0, 120:], torch.tensor([[0.25, 0.25, 0.1, 0.1], [0.75, 0.25, 0.1, 0.1],
                                               [0.25, 0.75, 0.1, 0.1], [0.75, 0.75, 0.1, 0.1]]), atol=1e-6)


# --------------------------------------------------------------------------- prompt self-attention
def test_prompt_self_attn_mask_structure():
    pad = torch.tensor([[False, False, True], [False, True, True]])
    query_mask = torch.tensor([[False, True], [False, False]])
    mask = prompt_self_attn_mask(2, pad, num_heads=3, query_mask=query_mask)
    assert mask.shape == (6, 5, 5)
    expected_b1 = torch.tensor([
        [0, 1, 0, 1, 1],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
    ], dtype=torch.bool)
    assert torch.equal(mask[3], expected_b1) and torch.equal(mask[5], expected_b1)
    assert torch.equal(mask[0, :2, 2:], torch.tensor([[False, False, True]] * 2))


def _official_prompt_self_attention(layer: DeformableTransformerDecoderLayer, tgt, query_pos, prompt: PromptTokens):
    """The official sequence-first formulation (dino_decoder.py, no DN), for comparison."""
    attn = nn.MultiheadAttention(layer.self_attn.embed_dim, layer.n_heads)
    attn.load_state_dict(layer.self_attn.state_dict())
    tgt, query_pos, tokens = tgt.transpose(0, 1), query_pos.transpose(0, 1), prompt.tokens.transpose(0, 1)
    num_queries, batch = tgt.shape[:2]
    size = num_queries + tokens.shape[0]
    mask = torch.zeros(batch, size, size, dtype=torch.bool)
    mask[:, :num_queries, num_queries:].transpose(1, 2)[prompt.pad_mask] = True
    mask[:, num_queries:, :num_queries][prompt.pad_mask] = True
    mask = mask.repeat_interleave(layer.n_heads, dim=0)
    x = torch.cat([tgt, tokens])
    pos = torch.cat([query_pos, tokens])
    out = layer.norm2(x + attn(x + pos, x + pos, x, attn_mask=mask)[0])
    return out[:num_queries].transpose(0, 1)


def _random_layer(d_model=32, heads=4) -> DeformableTransformerDecoderLayer:
    torch.manual_seed(0)
    layer = DeformableTransformerDecoderLayer(d_model=d_model, d_ffn=64, n_levels=2, n_heads=heads, n_points=2)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    return layer.eval()


def test_prompt_self_attention_matches_official_formulation():
    layer = _random_layer()
    tgt, pos = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    pad = torch.tensor([[False] * 7, [False] * 3 + [True] * 4])
    prompt = PromptTokens(torch.randn(2, 7, 32), pad)
    with torch.no_grad():
        ours = layer.self_attention(tgt, pos, None, prompt)
        ref = _official_prompt_self_attention(layer, tgt, pos, prompt)
    assert_close(ours, ref, atol=1e-5, name="prompt self-attention")


def test_prompt_self_attention_ignores_padded_tokens():
    """Queries never see padded prompt tokens; q = k = 2 * token, v = token for the valid ones."""
    layer = _random_layer()
    tgt, pos = torch.randn(1, 4, 32), torch.randn(1, 4, 32)
    tokens = torch.randn(1, 6, 32)
    pad = torch.tensor([[False, False, True, True, True, True]])
    other = tokens.clone()
    other[:, 2:] = 100 * torch.randn(1, 4, 32)
    with torch.no_grad():
        out = layer.self_attention(tgt, pos, None, PromptTokens(tokens, pad))
        out_other = layer.self_attention(tgt, pos, None, PromptTokens(other, pad))
        out_valid_only = layer.self_attention(tgt, pos, None, PromptTokens(tokens[:, :2], pad[:, :2]))
        # a plain unmasked attention over [queries; valid tokens] with q = k = 2 * token for the tokens
        x = torch.cat([tgt, tokens[:, :2]], dim=1)
        q = torch.cat([tgt + pos, 2 * tokens[:, :2]], dim=1)
        manual = layer.norm2(x + layer.self_attn(q, q, x, need_weights=False)[0])[:, :4]
        all_pad = layer.self_attention(tgt, pos, None, PromptTokens(tokens, torch.ones(1, 6, dtype=torch.bool)))
        no_prompt = layer.self_attention(tgt, pos, None, None)
    assert_close(out, out_other, atol=1e-6, name="padded values")
    assert_close(out, out_valid_only, atol=1e-5, name="padded dropped")
    assert_close(out, manual, atol=1e-5, name="manual")
    assert_close(all_pad, no_prompt, atol=1e-5, name="all padded == no prompt")


def test_visual_prompt_levels_per_layer(tiny_decoder):
    prompts = [PromptTokens(torch.full((1, 2, 256), float(i)), torch.zeros(1, 2, dtype=torch.bool))
               for i in range(4)]
    per_layer = tiny_decoder._layer_prompts(PromptMode.VISUAL, None, prompts)
    assert [p.tokens[0, 0, 0].item() for p in per_layer] == [0.0, 1.0, 2.0]
    model = MaskDINODecoder(**dict(TINY_KWARGS, dec_layers=5))
    assert [p.tokens[0, 0, 0].item() for p in model._layer_prompts(PromptMode.VISUAL, None, prompts)] == \
        [0.0, 1.0, 2.0, 0.0, 1.0]


def test_visual_mode_uses_confidence_for_proposals(tiny_decoder, case_a):
    features, mask_features = _case_a_inputs(case_a)
    prompts = [PromptTokens(torch.randn(1, 3, 256), torch.tensor([[False, False, True]])) for _ in range(4)]
    with torch.no_grad():
        out = tiny_decoder(features, mask_features, mode="visual", class_embeddings=case_a["text.class_embeddings"][:1],
                           visual_prompts=prompts)
        memory = torch.cat([f.flatten(2).transpose(1, 2) for f in features[::-1]], dim=1)
        om, _ = encoder_output_proposals(memory, [tuple(f.shape[-2:]) for f in features[::-1]])
        conf = tiny_decoder.confidence_score(tiny_decoder.enc_output_norm(tiny_decoder.enc_output(om)))[..., 0]
    assert_close(out.proposal_scores, conf, atol=1e-6)
    assert out.pred_logits.shape == (1, 40, 1) and out.pred_masks.shape == (1, 40, 32, 40)


def test_input_validation(tiny_decoder, case_a):
    features, mask_features = _case_a_inputs(case_a)
    classes = case_a["text.class_embeddings"]
    with pytest.raises(ValueError, match="feature levels"):
        tiny_decoder(features[:3], mask_features, class_embeddings=classes)
    with pytest.raises(ValueError, match=r"multi_scale_features\[1\]"):
        tiny_decoder([features[0], features[1][:, :10]] + features[2:], mask_features, class_embeddings=classes)
    with pytest.raises(ValueError, match="mask_features"):
        tiny_decoder(features, mask_features[:, :8], class_embeddings=classes)
    with pytest.raises(ValueError, match="class_embeddings"):
        tiny_decoder(features, mask_features)
    with pytest.raises(ValueError, match="grounding_class"):
        tiny_decoder(features, mask_features, mode="referring")
    with pytest.raises(ValueError):
        tiny_decoder(features, mask_features, mode="sot", class_embeddings=classes)
    with pytest.raises(ValueError, match="pad_mask"):
        PromptTokens(torch.zeros(1, 3, 256), torch.zeros(1, 4, dtype=torch.bool))


# --------------------------------------------------------------------------- denoising (training only)
def test_prepare_for_dn_structure():
    model = MaskDINODecoder(**dict(TINY_KWARGS, noise_scale=0.0))
    labels = [torch.tensor([3, 7]), torch.tensor([1, 2, 5])]
    boxes = [torch.rand(2, 4) * 0.5 + 0.2, torch.rand(3, 4) * 0.5 + 0.2]
    dn = model.prepare_for_dn(labels, boxes, label_encoder="coco_label_enc")
    assert (dn.single_pad, dn.num_groups, dn.pad_size) == (3, 33, 99)
    assert dn.label_embed.shape == (2, 99, 256) and dn.boxes_unsigmoid.shape == (2, 99, 4)
    # group g of image 1 holds its 3 targets in slots 3g..3g+2; image 0 leaves the third slot empty
    for g in (0, 32):
        assert torch.equal(dn.label_embed[1, 3 * g:3 * g + 3], model.coco_label_enc.weight[[1, 2, 5]])
        assert torch.equal(dn.label_embed[0, 3 * g:3 * g + 2], model.coco_label_enc.weight[[3, 7]])
        assert not dn.label_embed[0, 3 * g + 2].any() and not dn.boxes_unsigmoid[0, 3 * g + 2].any()
        assert_close(dn.boxes_unsigmoid[1, 3 * g:3 * g + 3].sigmoid(), boxes[1], atol=1e-5)
    mask = dn.attn_mask
    assert mask.shape == (139, 139)
    assert mask[99:, :99].all() and not mask[99:, 99:].any() and not mask[:99, 99:].any()
    group = torch.arange(99) // 3
    assert torch.equal(mask[:99, :99], group[:, None] != group[None, :])
    assert model.prepare_for_dn([torch.zeros(0, dtype=torch.long)], [torch.zeros(0, 4)],
                                label_encoder="grounding_label_enc") is None
    with pytest.raises(ValueError, match="label encoder"):
        model.prepare_for_dn(labels, boxes, label_encoder="coco")


def test_prepare_for_dn_noise():
    model = MaskDINODecoder(**TINY_KWARGS)
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    gen = torch.Generator().manual_seed(0)
    dn = model.prepare_for_dn([torch.tensor([0])], [boxes], label_encoder="grounding_label_enc", generator=gen)
    assert dn.num_groups == 100
    noisy = dn.boxes_unsigmoid[0].sigmoid()
    assert ((noisy - boxes).abs() <= 0.4 * torch.tensor([0.1, 0.2, 0.2, 0.4]) + 1e-5).all()
    assert (noisy - boxes).abs().max() > 0.01
    assert torch.equal(dn.known_boxes, boxes.repeat(100, 1))


def test_dn_queries_do_not_change_matching_outputs(tiny_decoder, case_a):
    """In training mode the matching queries cannot see the DN queries: their outputs equal the oracle's."""
    features, mask_features = _case_a_inputs(case_a)
    labels = [torch.tensor([0, 3])]
    boxes = [torch.tensor([[0.3, 0.4, 0.2, 0.2], [0.7, 0.6, 0.3, 0.1]])]
    dn = tiny_decoder.prepare_for_dn(labels, boxes, label_encoder="coco_label_enc",
                                     generator=torch.Generator().manual_seed(0))
    tiny_decoder.train()
    try:
        with torch.no_grad():
            out = tiny_decoder(features, mask_features, class_embeddings=case_a["text.class_embeddings"], denoising=dn)
    finally:
        tiny_decoder.eval()
    _assert_fixture(case_a, out)
    assert all(m is not None and m.shape == (1, 40, 32, 40) for m in out.layer_masks)
    assert out.denoising.layer_logits.shape == (4, 1, 100, 5)
    assert out.denoising.layer_boxes.shape == (4, 1, 100, 4)
    assert all(m.shape == (1, 100, 32, 40) for m in out.denoising.layer_masks)


# --------------------------------------------------------------------------- state dict
def _manifest(preset: str) -> list[tuple[str, list[int]]]:
    rows = (REFERENCE_DIR / f"{preset}_state_dict.tsv").read_text().splitlines()[1:]
    official = "glee." + PREFIX
    return [(r.split("\t")[0][len(official):], json.loads(r.split("\t")[1]))
            for r in rows if r.startswith(official)]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_state_dict_matches_manifest(preset):
    require_reference()
    with torch.device("meta"):
        model = MaskDINODecoder(**PRESETS[preset])
    state = model.state_dict(keep_vars=True)
    assert [(k, list(v.shape)) for k, v in state.items()] == _manifest(preset)
    assert set(LABEL_ENCODER_SIZES) <= {k.split(".")[0] for k in state}
    tied_file = "tied_parameters.json" if preset == "tiny" else f"tied_parameters_{preset}.json"
    groups = [g for g in json.loads((REFERENCE_DIR / tied_file).read_text()) if g[0].startswith("glee." + PREFIX)]
    assert len(groups) == 8
    for group in groups:
        names = [n[len("glee." + PREFIX):] for n in group]
        assert all(state[n] is state[names[0]] for n in names), names
