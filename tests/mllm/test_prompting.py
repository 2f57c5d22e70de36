"""Conversation layout: supervised answers only, the image and object list in the first turn, clear errors."""
from __future__ import annotations

import pytest

from mllm.prompting import IGNORE_INDEX, encode_conversation, object_list, user_text


def test_labels_supervise_answers_and_eos_only(model, image):
    tok = model.processor.tokenizer
    conv = encode_conversation(model.processor, image, [("what is <obj1>?", "a red circle."),
                                                        ("please segment it.", "Sure, [SEG].")],
                               num_objects=4, system="")
    tokens = tok.convert_ids_to_tokens(conv.input_ids.tolist())
    supervised = [t for t, label in zip(tokens, conv.labels.tolist()) if label != IGNORE_INDEX]
    assert supervised == ["a", "red", "circle", ".", "</s>", "Sure", ",", "[SEG]", ".", "</s>"]
    assert tokens.count("<image>") == (32 // 8) ** 2  # the processor expanded <image> to its patches
    assert tokens.count("<object>") == 4
    slots = [i for i, t in enumerate(tokens) if t == "<object>"]
    assert [tokens[i - 1] for i in slots] == ["<obj0>", "<obj1>", "<obj2>", "<obj3>"]
    assert tokens[slots[-1] + 1:slots[-1] + 4] == ["what", "is", "<obj1>"]
    assert (conv.labels[conv.labels != IGNORE_INDEX] == conv.input_ids[conv.labels != IGNORE_INDEX]).all()
    assert set(conv.vision) == {"pixel_values"} and conv.vision["pixel_values"].shape == (1, 3, 32, 32)


def test_generation_prompt_ends_with_assistant(model, image):
    conv = encode_conversation(model.processor, image, [("segment the star", None)], num_objects=0, system="")
    tokens = model.processor.tokenizer.convert_ids_to_tokens(conv.input_ids.tolist())
    assert tokens[-2:] == ["ASSISTANT", ":"] and (conv.labels == IGNORE_INDEX).all()


def test_user_text_places_image_and_objects_first():
    assert user_text("Is it red? <image>", 2, first_turn=True) == "<image>\n<obj0><object><obj1><object>\nIs it red?"
    assert user_text("What is <obj1>?", 0, first_turn=True) == "<image>\nWhat is <obj1>?"
    assert object_list(0) == ""


@pytest.mark.parametrize("turns, message", [
    ([], "at least one"),
    ([("a", None), ("b", "c")], "only the last turn"),
    ([("a", "b"), ("<image> again", "c")], "only appear in the first question"),
    ([("Segment [SEG] please", None)], r"the question contains \[SEG\], a token gleekit places itself"),
    ([("a", "b"), ("and <object>?", None)], "the question contains <object>"),
])
def test_bad_conversations(model, image, turns, message):
    with pytest.raises(ValueError, match=message):
        encode_conversation(model.processor, image, turns, num_objects=2, system="")


def test_overlong_conversation_is_refused_not_truncated(model, image):
    with pytest.raises(ValueError, match="over max_length=20"):
        encode_conversation(model.processor, image, [("segment", "it")], num_objects=2, system="", max_length=20)


def test_missing_image_is_refused_with_the_reason(model):
    with pytest.raises(ValueError, match=r"answer with \[SEG\] needs an image"):
        encode_conversation(model.processor, None, [("segment it", "Sure, [SEG].")], num_objects=2)
    with pytest.raises(ValueError, match="about one image"):
        encode_conversation(model.processor, None, [("hello", "hi")], num_objects=2)
