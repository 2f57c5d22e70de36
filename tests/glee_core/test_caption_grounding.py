"""Phrase grounding: phrases to CLIP token positions, in-context encoding, and Caption prompts in the predictor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glee_core.modeling.glee import GleeModel
from glee_core.modeling.text_encoder import mean_pool, text_hidden_states
from glee_core.modeling.tokenizer import load_clip_tokenizer
from glee_core.phrases import token_spans
from glee_core.predictor import GleePredictor
from glee_core.structures import Caption, Categories

CAPTION = "A red circle, next to two blue squares!"


@pytest.fixture(scope="module")
def model() -> GleeModel:
    torch.manual_seed(0)
    return GleeModel.from_config("tiny").eval()


def test_token_spans_select_the_phrase_tokens():
    caption = Caption(CAPTION)
    assert caption.phrases == ["red circle", "two blue squares"]
    ids = load_clip_tokenizer()(CAPTION)["input_ids"]
    tokenizer = load_clip_tokenizer()
    for (first, last), phrase in zip(token_spans(CAPTION, caption.spans, 77), caption.phrases):
        assert tokenizer.decode(ids[first:last]).strip() == phrase.lower()


def test_phrases_beyond_the_token_limit_are_refused():
    text = " ".join(["word"] * 80) + " red circle"
    with pytest.raises(ValueError, match="beyond the first 75 tokens"):
        token_spans(text, [(len(text) - 10, len(text))], 77)


def test_in_context_encoding_pools_the_caption_tokens(model):
    caption = Caption(CAPTION, context=True)
    with torch.no_grad():
        vocab = model.encode_caption(caption.text, caption.spans)
        ids, mask = model._tokenize([CAPTION])
        tokens = (text_hidden_states(model.text_encoder, ids, mask) @ model.lang_projection)[0]
    assert vocab.names == ("red circle", "two blue squares")
    positions = token_spans(CAPTION, caption.spans, 77)
    for row, (first, last) in enumerate(positions):
        torch.testing.assert_close(vocab.class_embeddings[row], tokens[first:last].mean(0))
    torch.testing.assert_close(vocab.fusion_tokens, tokens[: int(mask.sum())])
    # in context differs from each phrase encoded alone
    alone = model.encode_vocabulary(caption.phrases)
    assert not torch.allclose(alone.class_embeddings, vocab.class_embeddings, atol=1e-3)
    torch.testing.assert_close(alone.class_embeddings[0], mean_pool(
        text_hidden_states(model.text_encoder, *model._tokenize(["red circle"])) @ model.lang_projection,
        model._tokenize(["red circle"])[1])[0])


def test_caption_prompt_labels_index_the_phrases(model):
    predictor = GleePredictor(model)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    caption = Caption(CAPTION)
    dets = predictor.predict(image, caption, topk=6)
    same = predictor.predict(image, Categories(caption.phrases), topk=6)
    assert dets.label_names == caption.phrases and len(dets) == 6
    np.testing.assert_array_equal(dets.boxes, same.boxes)
    in_context = predictor.predict(image, Caption(CAPTION, context=True), topk=6)
    assert in_context.label_names == caption.phrases
    assert set(in_context.labels.tolist()) <= {0, 1}
    start, end = caption.spans[int(in_context.labels[0])]
    assert CAPTION[start:end] in caption.phrases
