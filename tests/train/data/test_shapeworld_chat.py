"""Segmentation conversations on shapeworld: one mask per [SEG], left-to-right order, captions from proposals."""
from __future__ import annotations

import numpy as np
import pytest

from train.data.shapeworld import generate_scene, scene_seed
from train.data.shapeworld.chat import caption_chats, scene_chats, seg_list


def _scenes(n=6):
    return [generate_scene(scene_seed("train", i, 5)) for i in range(n)]


def test_every_chat_has_one_mask_per_seg_and_all_kinds_appear():
    kinds = set()
    for scene in _scenes():
        boxes = np.stack([o.box for o in scene.objects])
        for chat in scene_chats(scene, np.random.default_rng(0), boxes):
            kinds.add(chat.kind)
            answer = chat.turns[-1][1]
            assert answer.count("[SEG]") == len(chat.masks)
            for mask, target in zip(chat.masks, chat.meta.get("targets", [])):
                assert mask is scene.objects[target].mask
    assert kinds == {"reasoning", "referring", "pair", "caption"}


def test_multi_target_answers_go_left_to_right():
    for scene in _scenes():
        for chat in scene_chats(scene, np.random.default_rng(1)):
            if chat.kind == "reasoning" and len(chat.masks) > 1:
                centres = [scene.objects[t].box[0] + scene.objects[t].box[2] for t in chat.meta["targets"]]
                assert centres == sorted(centres)


def test_pair_answers_name_each_object_before_its_seg():
    for scene in _scenes():
        for chat in scene_chats(scene, np.random.default_rng(2)):
            if chat.kind == "pair":
                a, b = chat.meta["phrases"]
                assert chat.turns[0][1] == f"Sure, {a} [SEG] and {b} [SEG]."


def test_captions_only_for_proposals_showing_one_object():
    scene = _scenes(1)[0]
    boxes = np.stack([o.box for o in scene.objects])
    far = np.array([[-50.0, -50.0, -40.0, -40.0]])
    chats = caption_chats(scene, np.concatenate([boxes, far]))
    assert [c.meta["object"] for c in chats] == list(range(len(scene.objects)))
    obj = scene.objects[0]
    assert chats[0].turns == [("What is <obj0>?", f"{'An' if obj.color[0] in 'aeiou' else 'A'} {obj.color} {obj.shape}.")]


def test_seg_list():
    assert seg_list(1) == "[SEG]" and seg_list(3) == "[SEG], [SEG] and [SEG]"
    with pytest.raises(ValueError):
        seg_list(0)
