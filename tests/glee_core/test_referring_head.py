"""The optional referring head: its parts' values, and how GleeModel applies, saves and loads it."""
from __future__ import annotations

import pytest
import torch

from glee_core.config import GleeConfig, ReferringHeadConfig, get_preset
from glee_core.modeling.glee import GleeModel
from glee_core.modeling.referring_head import (EXTRA_FEATURES, ReferringHead, choice_logits_to_query_logits,
                                               referring_choice_loss, region_colours)
from glee_core.modeling.text_encoder import encode_expressions

SMALL = ReferringHeadConfig(dim=32, layers=2, heads=2)


def test_region_colours_are_the_mean_colour_under_each_mask():
    images = torch.zeros(1, 3, 16, 16)
    images[0, :, :8] = torch.tensor([1.0, -1.0, 0.5])[:, None, None]  # top half
    images[0, :, 8:] = torch.tensor([-2.0, 0.0, 2.0])[:, None, None]  # bottom half
    masks = torch.full((1, 2, 4, 4), -30.0)
    masks[0, 0, :2] = 30.0
    masks[0, 1, 2:, 1:3] = 30.0
    colours = region_colours(images, masks)
    assert colours.shape == (1, 2, 3)
    assert torch.allclose(colours[0, 0], torch.tensor([1.0, -1.0, 0.5]), atol=1e-4)
    assert torch.allclose(colours[0, 1], torch.tensor([-2.0, 0.0, 2.0]), atol=1e-4)
    with pytest.raises(ValueError, match="do not match images"):
        region_colours(images, torch.zeros(1, 2, 5, 4))


def test_query_logits_carry_the_softmax_probabilities():
    choices = torch.tensor([[0.5, 2.0, -1.0, 0.0], [-50.0, 60.0, -50.0, -50.0]])
    logits = choice_logits_to_query_logits(choices)
    assert logits.shape == (2, 3, 1)
    assert torch.allclose(logits[..., 0].sigmoid(), choices.softmax(-1)[:, 1:], atol=1e-6)
    assert torch.isfinite(logits).all()  # a query holding all the probability still has a finite logit


def test_choice_loss_is_minus_log_of_the_right_choices_total():
    choices = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]])
    positives = torch.tensor([[False, True, True], [True, False, False]])
    p = choices.softmax(-1)
    expected = -(torch.log(p[0, 1] + p[0, 2]) + torch.log(p[1, 0])) / 2
    assert torch.isclose(referring_choice_loss(choices, positives), expected)
    with pytest.raises(ValueError, match="at least one right choice"):
        referring_choice_loss(choices, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="must be bool"):
        referring_choice_loss(choices, positives.float())


@pytest.fixture(scope="module")
def head() -> ReferringHead:
    torch.manual_seed(0)
    return ReferringHead(16, 8, SMALL).eval()


def test_head_scores_none_and_each_query_and_ignores_padding(head):
    queries, text = torch.randn(2, 5, 16 + EXTRA_FEATURES), torch.randn(2, 4, 8)
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    with torch.no_grad():
        choices = head(queries, text, valid)
        garbage = text.clone()
        garbage[~valid] = 100.0
        assert choices.shape == (2, 6)
        assert torch.allclose(head(queries, garbage, valid), choices, atol=1e-5)  # padding is not read
        order = torch.tensor([3, 0, 4, 1, 2])
        permuted = head(queries[:, order], text, valid)  # queries have no order: scores follow them
    assert torch.allclose(permuted[:, 0], choices[:, 0], atol=1e-5)
    assert torch.allclose(permuted[:, 1:], choices[:, 1:][:, order], atol=1e-5)


def test_head_rejects_wrong_shapes(head):
    with pytest.raises(ValueError, match=r"queries must be \[B, Q, 25\]"):
        head(torch.randn(1, 5, 16), torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="text must be"):
        head(torch.randn(1, 5, 25), torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool))


def _with_head(seed: int = 0) -> GleeModel:
    config = get_preset("tiny")
    config.referring_head = SMALL
    torch.manual_seed(seed)
    return GleeModel(config).eval()


def test_model_applies_the_head_to_text_expressions_only():
    model = _with_head()
    plain = GleeModel(get_preset("tiny")).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("referring_head.")}
    plain.load_state_dict(state)
    images, texts = torch.randn(2, 3, 128, 128), ["the red circle", "the second star from the left"]
    with torch.no_grad():
        out, base = model(images, expressions=texts), plain(images, expressions=texts)
        categories = model(images, categories=["circle", "star"])
        enc = encode_expressions(model.text_encoder, model.lang_projection, *model._tokenize(texts))
        from_embeds = model(images, expression_embeds=enc.fusion_tokens, expression_mask=enc.fusion_mask)
    assert out.referring_choices.shape == (2, out.pred_logits.shape[1] + 1)
    assert torch.allclose(out.pred_logits[..., 0].sigmoid(), out.referring_choices.softmax(-1)[:, 1:], atol=1e-6)
    assert torch.equal(out.decoder.pred_logits, base.pred_logits)  # GLEE's own logits are kept
    for name in ("pred_boxes", "pred_masks", "query_embeds"):
        assert torch.equal(getattr(out, name), getattr(base, name)), name
    assert categories.referring_choices is None and base.referring_choices is None
    assert from_embeds.referring_choices is None  # the head reads CLIP tokens; other prompt embeddings skip it
    model.train()
    with torch.no_grad():
        training = model(images, expressions=texts)
    model.eval()
    assert training.referring_choices is None  # training GLEE trains its own logits
    assert torch.equal(training.pred_logits, training.decoder.pred_logits)


def test_model_with_head_saves_and_loads(tmp_path):
    model = _with_head(seed=3)
    model.save_pretrained(tmp_path)
    loaded = GleeModel.from_pretrained(tmp_path)
    assert loaded.config.referring_head == SMALL
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded(images, expressions=["the cross"]).pred_logits,
                           model(images, expressions=["the cross"]).pred_logits)


def test_config_round_trips_the_head_and_names_unknown_keys():
    config = get_preset("tiny")
    config.referring_head = SMALL
    assert GleeConfig.from_dict(config.to_dict()) == config
    assert GleeConfig.from_dict(get_preset("tiny").to_dict()).referring_head is None
    data = config.to_dict()
    data["referring_head"]["width"] = 3
    with pytest.raises(ValueError, match="referring_head.width"):
        GleeConfig.from_dict(data)
