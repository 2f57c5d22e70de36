"""read_llava: LLaVA conversation json (DATA_FORMATS.md §5), <image> moved to the front of the first turn."""
from __future__ import annotations

from pathlib import Path

import pytest

from train.data.readers import DatasetFormatError, MissingImageError, read_llava


def items() -> list[dict]:
    return [
        {"id": "000000004711", "image": "000000004711.jpg", "conversations": [
            {"from": "human", "value": "What is the dog holding?\n<image>"},
            {"from": "gpt", "value": "It carries a red frisbee in its mouth."},
            {"from": "human", "value": "Is it indoors?"}, {"from": "gpt", "value": "No, it is on a lawn."}]},
        {"id": 17, "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]},
        {"id": "gqa_1", "image": "gqa/images/1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHow many cars?"}, {"from": "gpt", "value": "Two."}]},
    ]


@pytest.fixture
def llava(tmp_path, make_image, make_json):
    make_image(tmp_path / "images" / "000000004711.jpg")
    make_image(tmp_path / "images" / "gqa" / "images" / "1.jpg")
    return lambda data: (make_json(tmp_path / "llava_instruct_150k.json", data), tmp_path / "images")


def test_values(llava):
    json_path, root = llava(items())
    dog, text_only, gqa = read_llava(json_path, root)
    assert dog.id == "000000004711" and dog.image == root / "000000004711.jpg"
    assert dog.turns == [("human", "<image>\nWhat is the dog holding?"), ("gpt", "It carries a red frisbee in its mouth."),
                         ("human", "Is it indoors?"), ("gpt", "No, it is on a lawn.")]
    assert text_only.id == "17" and text_only.image is None and text_only.turns[0] == ("human", "Say hi.")
    assert gqa.image == root / "gqa" / "images" / "1.jpg" and gqa.turns[0] == ("human", "<image>\nHow many cars?")


def _with(index, **changes) -> list[dict]:
    data = items()
    data[index].update(changes)
    return data


@pytest.mark.parametrize("data, problem", [
    (_with(0, conversations=[{"from": "gpt", "value": "<image> hi"}]), r"items\[0\] \(id '000000004711'\): 'conversations'\[0\] is from 'gpt', expected 'human'"),
    (_with(0, conversations=[{"from": "human", "value": "no token"}]), r"items\[0\] .*exactly once, in the first human turn \(found \[0\]\)"),
    (_with(2, conversations=[{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "<image>"}]), r"items\[2\] .*found \[1, 1\]"),
    (_with(1, conversations=[{"from": "human", "value": "<image> what?"}]), r"items\[1\] \(id 17\): has no 'image' but its turns contain <image>"),
    (_with(1, conversations=[]), r"items\[1\] \(id 17\): 'conversations' is empty"),
    (_with(1, conversations=[{"from": "human"}]), r"items\[1\] \(id 17\): missing key 'value'"),
    (_with(1, id=None), r"items\[1\] \(id None\): 'id' must be a str \(or int\)"),
    ({"not": "a list"}, r"top level: the file content must be list"),
], ids=["gpt_first", "no_image_token", "two_image_tokens", "token_without_image", "empty", "missing_value", "bad_id", "not_a_list"])
def test_malformed(llava, data, problem):
    json_path, root = llava(data)
    with pytest.raises(DatasetFormatError, match=r"llava_instruct_150k.json: " + problem):
        read_llava(json_path, root)


def test_missing_image(llava):
    json_path, root = llava(_with(2, image="gqa/images/2.jpg"))
    with pytest.raises(MissingImageError, match=r"items\[2\] \(id 'gqa_1'\): image not found: .*gqa/images/2.jpg"):
        read_llava(json_path, root)
    assert read_llava(json_path, root, check_images=False)[2].image == Path(root) / "gqa/images/2.jpg"
