"""GleeLLM on a second VLM family: a tiny random Gemma3 (SigLIP vision tower, pooled soft image tokens wrapped in
``<start_of_image>``/``<end_of_image>``, bidirectional attention over image tokens via ``token_type_ids``,
sliding-window layers, scaled and tied embeddings), with no change to GleeLLM for it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glee_core.modeling.glee import GleeModel
from mllm.batching import collate
from mllm.config import GleeLLMConfig
from mllm.generation import MllmAnswer
from mllm.io import load_gleellm, save_gleellm
from mllm.modeling import GleeLLM
from mllm.prompting import token_type_inputs
from mllm.tiny import GEMMA3_IMAGE, GEMMA3_IMAGE_PLACEHOLDER, tiny_gemma3, word_tokenizer
from tests.mllm.conftest import WORDS, box_mask

QUESTION = "Please segment the red circle."
IMAGE_TOKENS = 4


def make_gemma3(seed: int = 0) -> GleeLLM:
    torch.manual_seed(seed)
    vlm, processor = tiny_gemma3(word_tokenizer(WORDS), image_size=32, patch_size=8, image_tokens=IMAGE_TOKENS,
                                 hidden=32, layers=2, heads=2, vision_hidden=32, sliding_window=16)
    config = GleeLLMConfig(num_objects=4, object_categories=["circle", "star"], system_prompt="", max_length=300,
                           max_new_tokens=6, image_placeholder=GEMMA3_IMAGE_PLACEHOLDER)
    return GleeLLM.build(vlm, processor, GleeModel.from_config("tiny").eval(), config)


@pytest.fixture
def gemma3() -> GleeLLM:
    return make_gemma3()


def _scene():
    """A square image (GLEE's smallest padded input, 128x128) with a red and a blue box, and their masks."""
    image = np.full((96, 96, 3), 90, np.uint8)
    image[10:60, 5:40] = (220, 30, 30)
    image[40:90, 55:90] = (30, 30, 220)
    return image, box_mask(96, 96, 10, 60, 5, 40), box_mask(96, 96, 40, 90, 55, 90)


def _batch(model, image, answers, masks):
    convs = [model.encode(image, [(QUESTION, a)]) for a in answers]
    return collate(convs, [image] * len(convs), model.glee.config.input, model.processor.tokenizer.pad_token_id,
                   seg_masks=masks)


def _vlm_states(model, batch, contents):
    """The VLM's last hidden states, called by hand the way GleeLLM calls it."""
    with model.object_slots(contents):
        return model.vlm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **batch.vision,
                         **token_type_inputs(model.processor, batch.input_ids), output_hidden_states=True)


def test_gemma3_prompt_layout_and_token_types(gemma3):
    """Gemma3's processor returns token_type_ids for the first segment only: they stay out of the vision inputs
    (so conversations whose questions differ in length still batch) and are rebuilt over whole sequences."""
    image, left, _ = _scene()
    convs = [gemma3.encode(image, [(QUESTION, "Sure, [SEG].")]),
             gemma3.encode(image, [("segment the star in this image please.", "the star [SEG] and the circle [SEG].")])]
    batch = collate(convs, [image] * 2, gemma3.glee.config.input, gemma3.processor.tokenizer.pad_token_id,
                    seg_masks=[[left], [left, left]])
    tokenizer = gemma3.processor.tokenizer
    assert set(batch.vision) == {"pixel_values"} and batch.vision["pixel_values"].shape == (2, 3, 32, 32)
    image_id = tokenizer.convert_tokens_to_ids(GEMMA3_IMAGE)
    assert ((batch.input_ids == image_id).sum(1) == IMAGE_TOKENS).all()
    types = token_type_inputs(gemma3.processor, batch.input_ids)
    assert list(types) == ["token_type_ids"]
    assert torch.equal(types["token_type_ids"], (batch.input_ids == image_id).long())  # padding and answers: 0
    tokens = tokenizer.convert_ids_to_tokens(batch.input_ids[0])
    start = tokens.index("<start_of_image>")
    assert tokens[start + IMAGE_TOKENS + 1] == "<end_of_image>" and tokens[start + IMAGE_TOKENS + 2] == "<obj0>"
    assert tokens.count("<object>") == 4
    with torch.no_grad():
        out = gemma3.eval()(batch)
    assert out.seg_image_index.tolist() == [0, 1, 1] and torch.isfinite(out.loss)


def test_gemma3_training_forward_two_seg(gemma3):
    image, left, right = _scene()
    batch = _batch(gemma3, image, ["the circle [SEG] and the star [SEG]."], [[left, right]])
    out = gemma3.train()(batch)
    hp, wp = batch.glee.padded_size
    assert (hp, wp) == (128, 128)
    assert out.seg_masks.shape == (2, hp // 4, wp // 4) and out.seg_boxes.shape == (2, 4)
    assert out.seg_image_index.tolist() == [0, 0] and out.seg_index.tolist() == [0, 1]
    assert out.logits.shape == (*batch.input_ids.shape, len(gemma3.processor.tokenizer))
    assert out.pointer_logits.shape == (2, 4)
    terms = (out.ce_loss, out.mask_bce_loss, out.mask_dice_loss, out.select_loss)
    assert all(torch.isfinite(t) and t > 0 for t in terms)
    assert torch.isfinite(out.pointer_loss) and out.pointer_loss >= 0  # 0 when no random proposal fits a target
    expected = out.ce_loss + 2.0 * out.mask_bce_loss + 0.5 * out.mask_dice_loss + out.select_loss + out.pointer_loss
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert gemma3.seg_projector.mlp[0].weight.grad.abs().sum() > 0
    assert gemma3.object_projector is not None and any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in gemma3.object_projector.parameters())


def test_gemma3_each_seg_state_comes_from_its_own_position(gemma3):
    image, left, right = _scene()
    batch = _batch(gemma3, image, ["the star [SEG] and the circle [SEG]."], [[left, right]])
    seen = []
    handle = gemma3.seg_projector.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        gemma3.eval()(batch)
        contents = gemma3._object_contents(gemma3.propose(batch.glee))
        states = _vlm_states(gemma3, batch, contents).hidden_states[-1][0]
    handle.remove()
    positions = (batch.input_ids[0] == gemma3.token_ids.seg).nonzero()[:, 0]
    assert len(positions) == 2 and len(seen) == 1
    assert torch.allclose(seen[0], states[positions], atol=1e-5)
    assert not torch.allclose(seen[0], states[positions - 1], atol=1e-3)  # no one-token shift


def test_gemma3_object_slots_carry_projected_queries(gemma3):
    image, _, _ = _scene()
    batch = _batch(gemma3, image, ["Sure."], [[]])
    contents = gemma3._object_contents(gemma3.propose(batch.glee))
    ids = batch.input_ids
    embed = gemma3.vlm.get_input_embeddings()  # Gemma3's scaled embedding: the hook writes after the scaling
    with gemma3.object_slots(contents):
        embedded = embed(ids)
    plain = embed(ids)
    slots = ids == gemma3.token_ids.object_slot
    assert int(slots.sum()) == 4
    assert torch.allclose(embedded[slots], contents[0])
    mentions = torch.isin(ids, torch.tensor(gemma3.token_ids.object_refs))  # <objk> carries object k too
    torch.testing.assert_close(embedded[mentions], plain[mentions] + contents[0])
    assert torch.equal(embedded[~slots & ~mentions], plain[~slots & ~mentions])
    with torch.no_grad():  # and the contents reach the language model: the answer's logits change with them
        with_objects = _vlm_states(gemma3, batch, contents).logits
        other = _vlm_states(gemma3, batch, torch.zeros_like(contents)).logits
    assert not torch.allclose(with_objects, other, atol=1e-4)
    with gemma3.object_slots(contents[:, :2]), pytest.raises(ValueError, match="exactly 2 <object> slots"):
        embed(ids)


def test_gemma3_generate_answers_with_objects(gemma3):
    image, _, _ = _scene()
    answer = gemma3.generate(image, QUESTION)
    assert isinstance(answer, MllmAnswer) and isinstance(answer.text, str)
    assert answer.objects is not None and len(answer.objects.scores) == 4
    assert answer.objects.masks.shape == (4, 96, 96) and answer.objects.image_size == (96, 96)
    assert len(answer.segments) == answer.text.count("[SEG]")


def test_gemma3_adamw_steps_lower_the_loss():
    model = make_gemma3(seed=1).train()
    image, left, right = _scene()
    batch = _batch(model, image, ["the circle [SEG] and the star [SEG]."], [[left, right]])
    batch.objects = model.propose(batch.glee)  # a frozen GLEE proposes the same objects every step
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(14):
        out = model(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_gemma3_save_load_round_trip(gemma3, tmp_path):
    image, left, right = _scene()
    gemma3.config.base_glee = None  # GLEE goes into the folder
    with torch.no_grad():
        for p in gemma3.seg_projector.parameters():  # the head's own weights must travel too
            p.add_(0.01)
    save_gleellm(gemma3, tmp_path / "g3")
    loaded = load_gleellm(tmp_path / "g3")
    assert type(loaded.vlm) is type(gemma3.vlm) and type(loaded.processor) is type(gemma3.processor)
    assert loaded.processor.tokenizer.boi_token == "<start_of_image>"
    assert loaded.token_ids == gemma3.token_ids
    batch = _batch(gemma3, image, ["the circle [SEG] and the star [SEG]."], [[left, right]])
    reloaded_batch = _batch(loaded, image, ["the circle [SEG] and the star [SEG]."], [[left, right]])
    assert torch.equal(batch.input_ids, reloaded_batch.input_ids)
    assert torch.equal(batch.vision["pixel_values"], reloaded_batch.vision["pixel_values"])
    with torch.no_grad():
        before, after = gemma3.eval()(batch), loaded(reloaded_batch)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.seg_masks, after.seg_masks)
    assert loaded.generate(image, QUESTION).text == gemma3.generate(image, QUESTION).text
