"""Encoded vocabularies: exact equality with full-length encoding, the cache, files, and mismatches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glee_core.modeling.glee import GleeModel
from glee_core.modeling.text_encoder import encode_categories, mean_pool, text_hidden_states
from glee_core.predictor import GleePredictor
from glee_core.structures import Categories
from glee_core.vocabulary import Vocabulary, VocabularyCache, VocabularyMismatchError

NAMES = ["red circle", "a very long name of a small blue rotated triangle with stripes", "star", "square",
         "green hexagon on the left"]


@pytest.fixture(scope="module")
def model() -> GleeModel:
    torch.manual_seed(0)
    return GleeModel.from_config("tiny").eval()


def _text_calls(model: GleeModel) -> list[int]:
    calls = []
    model.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("chunk_size", [1, 2, 256])
def test_chunked_cut_encoding_equals_encoding_all_77_positions(model, chunk_size):
    ids, mask = model._tokenize(NAMES)
    with torch.no_grad():
        full = text_hidden_states(model.text_encoder, ids, mask) @ model.lang_projection  # [K, 77, C]
        enc = encode_categories(model.text_encoder, model.lang_projection, ids, mask, chunk_size=chunk_size)
    assert enc.class_embeddings.shape == (len(NAMES), model.config.hidden_dim)
    torch.testing.assert_close(enc.class_embeddings, mean_pool(full, mask), atol=2e-6, rtol=1e-5)
    expected_tokens = full[mask > 0]  # names in order, BOS..EOS each
    assert enc.fusion_tokens.shape == (1, int(mask.sum()), model.config.hidden_dim)
    torch.testing.assert_close(enc.fusion_tokens[0], expected_tokens, atol=2e-6, rtol=1e-5)


def test_forward_with_a_vocabulary_equals_forward_with_names(model):
    images = torch.randn(1, 3, 128, 160)
    model.vocabularies.clear()
    with torch.no_grad():
        vocab = model.encode_vocabulary(NAMES)
        by_names = model(images, categories=NAMES)
        by_vocab = model(images, categories=vocab)
    assert vocab.names == tuple(NAMES) and len(vocab) == 5
    for name in ("pred_logits", "pred_boxes", "pred_masks", "query_embeds"):
        assert torch.equal(getattr(by_names, name), getattr(by_vocab, name)), name


def test_cache_skips_the_text_tower_and_follows_weight_changes():
    torch.manual_seed(1)
    model = GleeModel.from_config("tiny").eval()
    calls = _text_calls(model)
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        first = model(images, categories=["circle", "square"]).pred_logits
        model(images, categories=["circle", "square"])
        assert len(calls) == 1 and len(model.vocabularies) == 1
        fingerprint = model.text_fingerprint()
        model.lang_projection.mul_(2.0)  # new weights: a new fingerprint, the cached entry no longer matches
        assert model.text_fingerprint() != fingerprint
        second = model(images, categories=["circle", "square"]).pred_logits
    assert len(calls) == 2 and not torch.allclose(first, second)


def test_a_cached_entry_of_another_device_or_dtype_is_converted_once():
    """An entry made before the model moved (e.g. encoded on CPU, model then sent to CUDA; same fingerprint) is
    stored converted, so later calls do not convert it again. A dtype stands in for the device here."""
    torch.manual_seed(1)
    model = GleeModel.from_config("tiny").eval()
    calls = _text_calls(model)
    with torch.no_grad():
        encoded = model.vocabulary(["circle", "square"])
        model.vocabularies.put(encoded.to(dtype=torch.float64))  # as if made where the model was before
        converted = model.vocabulary(["circle", "square"])
        again = model.vocabulary(["circle", "square"])
    assert len(calls) == 1 and converted.class_embeddings.dtype == torch.float32
    assert again is converted and len(model.vocabularies) == 1
    torch.testing.assert_close(converted.class_embeddings, encoded.class_embeddings)


def test_gradient_mode_encodes_every_call_and_trains_the_text_tower(model):
    calls = _text_calls(model)
    model.vocabularies.clear()
    out = model(torch.randn(1, 3, 128, 128), categories=["circle"])
    out.pred_logits.sum().backward()
    model(torch.randn(1, 3, 128, 128), categories=["circle"])
    assert len(calls) == 2 and len(model.vocabularies) == 0
    grad = model.text_encoder.get_input_embeddings().weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    model.zero_grad(set_to_none=True)


def test_lru_cache_evicts_the_least_recently_used_and_zero_disables():
    cache = VocabularyCache(max_entries=2)
    vocabs = [Vocabulary((name,), torch.zeros(1, 4), torch.zeros(3, 4), "fp") for name in "abc"]
    cache.put(vocabs[0])
    cache.put(vocabs[1])
    assert cache.get("fp", ["a"]) is vocabs[0]  # "a" is now the most recent
    cache.put(vocabs[2])
    assert cache.get("fp", ["b"]) is None and cache.get("fp", ["a"]) is vocabs[0] and len(cache) == 2
    assert cache.get("other", ["a"]) is None
    off = VocabularyCache(max_entries=0)
    off.put(vocabs[0])
    assert len(off) == 0
    with pytest.raises(ValueError, match="max_entries"):
        VocabularyCache(-1)


def test_file_round_trip_and_use_in_the_predictor(model, tmp_path):
    with torch.no_grad():
        vocab = model.encode_vocabulary(["red circle", "blue square"])
    path = vocab.save(tmp_path / "vocab.safetensors")
    loaded = Vocabulary.load(path)
    assert loaded.names == vocab.names and loaded.fingerprint == model.text_fingerprint()
    assert torch.equal(loaded.class_embeddings, vocab.class_embeddings)
    assert torch.equal(loaded.fusion_tokens, vocab.fusion_tokens)
    predictor = GleePredictor(model)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    from_file = predictor.predict(image, loaded, topk=5)
    from_names = predictor.predict(image, Categories(["red circle", "blue square"]), topk=5)
    np.testing.assert_array_equal(from_file.boxes, from_names.boxes)
    np.testing.assert_array_equal(from_file.scores, from_names.scores)
    assert from_file.label_names == ["red circle", "blue square"]


def test_a_vocabulary_from_another_model_is_refused(model, tmp_path):
    torch.manual_seed(2)
    other = GleeModel.from_config("tiny").eval()
    with torch.no_grad():
        vocab = other.encode_vocabulary(["circle"])
    with pytest.raises(VocabularyMismatchError, match="another text tower.*encode the names again"):
        model(torch.randn(1, 3, 128, 128), categories=vocab)


@pytest.mark.parametrize("content, message", [
    (b"not a safetensors file", "not a readable safetensors file"),
    (None, "not a gleekit vocabulary"),
])
def test_bad_vocabulary_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "v.safetensors"
    if content is None:
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Vocabulary.load(tmp_path / "missing.safetensors")


def test_vocabulary_shapes_are_checked():
    with pytest.raises(ValueError, match=r"class_embeddings must be \[K=2, C\]"):
        Vocabulary(("a", "b"), torch.zeros(1, 4), torch.zeros(3, 4), "fp")
    with pytest.raises(ValueError, match=r"fusion_tokens must be \[T, C=4\]"):
        Vocabulary(("a",), torch.zeros(1, 4), torch.zeros(3, 5), "fp")
