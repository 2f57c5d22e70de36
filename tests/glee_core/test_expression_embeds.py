"""Referring prompts given as embeddings (an LLM's [SEG] through a projector) and reused backbone features."""
from __future__ import annotations

import pytest
import torch

from glee_core.modeling.glee import GleeModel
from glee_core.modeling.text_encoder import encode_expressions


@pytest.fixture(scope="module")
def model() -> GleeModel:
    torch.manual_seed(0)
    return GleeModel.from_config("tiny").eval()


def test_embeddings_of_the_clip_path_reproduce_text_prompts(model):
    images = torch.randn(2, 3, 128, 160)
    texts = ["the red circle", "a star left of the square"]
    with torch.no_grad():
        ids, mask = model._tokenize(texts)
        enc = encode_expressions(model.text_encoder, model.lang_projection, ids, mask)
        from_text = model(images, expressions=texts)
        from_embeds = model(images, expression_embeds=enc.fusion_tokens, expression_mask=enc.fusion_mask,
                            image_features=model.encode_image(images))
    for name in ("pred_logits", "pred_boxes", "pred_masks", "query_embeds"):
        assert torch.allclose(getattr(from_text, name), getattr(from_embeds, name), atol=1e-5), name


def test_gradients_reach_the_prompt_embeddings(model):
    prompt = torch.randn(1, 2, model.config.hidden_dim, requires_grad=True)
    out = model(torch.randn(1, 3, 128, 128), expression_embeds=prompt)
    out.pred_logits.sum().backward()
    assert prompt.grad is not None and float(prompt.grad.abs().sum()) > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(expressions=["a"], expression_embeds=torch.zeros(1, 1, 256)), "not both"),
    (dict(expression_mask=torch.ones(1, 1, dtype=torch.bool), categories=["a"]), "only used together"),
    (dict(expression_embeds=torch.zeros(1, 1, 7)), r"must be \[B=1, L, 256\]"),
    (dict(expression_embeds=torch.zeros(1, 2, 256), expression_mask=torch.zeros(1, 2, dtype=torch.bool)),
     "no valid token"),
    (dict(expression_embeds=torch.zeros(1, 2, 256), categories=["a"]), "either expressions or categories"),
])
def test_bad_embedding_prompts(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model(torch.randn(1, 3, 128, 128), **kwargs)
