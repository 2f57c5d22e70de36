"""GleeLLM forward: shapes, [SEG] bookkeeping and order, object slots, freezing, errors, and learning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mllm.batching import collate
from tests.mllm.conftest import box_mask, make_model


def _batch(model, image, answers, masks, question="Please segment the red circle."):
    convs = [model.encode(image, [(question, a)]) for a in answers]
    return collate(convs, [image] * len(convs), model.glee.config.input, model.processor.tokenizer.pad_token_id,
                   seg_masks=masks)


def test_forward_returns_one_mask_per_seg_in_reading_order(model, image):
    h, w = image.shape[:2]
    masks = [[box_mask(h, w, 0, 40, 0, 40)], [box_mask(h, w, 50, 90, 0, 60), box_mask(h, w, 10, 30, 70, 120)]]
    batch = _batch(model, image, ["Sure, [SEG].", "the star [SEG] and the circle [SEG]."], masks)
    out = model(batch)
    hp, wp = batch.glee.padded_size
    assert out.seg_masks.shape == (3, hp // 4, wp // 4) and out.seg_boxes.shape == (3, 4)
    assert out.seg_image_index.tolist() == [0, 1, 1] and out.seg_index.tolist() == [0, 1, 2]
    assert ((out.seg_scores > 0) & (out.seg_scores < 1)).all()
    assert out.pointer_logits.shape == (3, model.config.num_objects)
    expected = (out.ce_loss + 2.0 * out.mask_bce_loss + 0.5 * out.mask_dice_loss + out.select_loss
                + out.pointer_loss)
    assert torch.allclose(out.loss, expected)
    assert all(torch.isfinite(t) and t >= 0 for t in (out.ce_loss, out.mask_bce_loss, out.mask_dice_loss))


def test_model_without_object_tokens_trains_without_pointer_loss(image):
    model = make_model(num_objects=0)
    h, w = image.shape[:2]
    out = model(_batch(model, image, ["Sure, [SEG]."], [[box_mask(h, w, 0, 40, 0, 40)]]))
    assert out.pointer_loss is None and out.pointer_logits is None
    assert torch.allclose(out.loss, out.ce_loss + 2.0 * out.mask_bce_loss + 0.5 * out.mask_dice_loss + out.select_loss)


def test_inference_forward_has_no_losses(model, image):
    batch = _batch(model, image, ["Sure, [SEG]."], None)
    batch.labels = None
    out = model.eval()(batch)
    assert out.loss is None and out.seg_masks.shape[0] == 1


def test_batch_without_seg_has_token_loss_only(model, image):
    out = model(_batch(model, image, ["a red circle."], [[]]))
    assert out.seg_masks.shape[0] == 0 and float(out.mask_bce_loss.detach()) == 0.0 and out.ce_loss > 0


def test_train_mask_prompts_limits_glee_calls():
    model = make_model(train_mask_prompts=1).train()
    image = np.zeros((96, 128, 3), np.uint8)
    masks = [[box_mask(96, 128, 0, 40, 0, 40), box_mask(96, 128, 50, 90, 0, 60)]]
    out = model(_batch(model, image, ["[SEG] and [SEG]."], masks))
    assert out.seg_masks.shape[0] == 1 and out.pointer_logits.shape[0] == 2
    assert model.eval()(_batch(model, image, ["[SEG] and [SEG]."], masks)).seg_masks.shape[0] == 2


def test_object_slots_carry_projected_queries(model, image):
    batch = _batch(model, image, ["Sure."], [[]])
    objects = model.propose(batch.glee)
    contents = model._object_contents(objects)
    ids = batch.input_ids
    with model.object_slots(contents):
        embedded = model.vlm.get_input_embeddings()(ids)
    plain = model.vlm.get_input_embeddings()(ids)
    slots = ids == model.token_ids.object_slot
    assert torch.allclose(embedded[slots], contents[0])
    mentions = torch.isin(ids, torch.tensor(model.token_ids.object_refs))
    assert int(mentions.sum()) == contents.shape[1]  # the object list: <obj0><object><obj1><object>...
    for k, token in enumerate(model.token_ids.object_refs):  # each <objk> also carries object k
        where = ids == token
        torch.testing.assert_close(embedded[where], plain[where] + contents[0, k])
    assert torch.equal(embedded[~slots & ~mentions], plain[~slots & ~mentions])
    model.config.object_mentions = False
    try:
        with model.object_slots(contents):
            embedded = model.vlm.get_input_embeddings()(ids)
        assert torch.equal(embedded[~slots], plain[~slots])
    finally:
        model.config.object_mentions = True
    with model.object_slots(contents[:, :2]), pytest.raises(ValueError, match="exactly 2 <object> slots"):
        model.vlm.get_input_embeddings()(ids)


def test_a_generated_mention_carries_its_object_without_any_slot(model, image):
    batch = _batch(model, image, ["Sure."], [[]])
    contents = model._object_contents(model.propose(batch.glee))
    ids = torch.tensor([[model.token_ids.object_refs[3]]])  # one decoding step that cites <obj3>
    plain = model.vlm.get_input_embeddings()(ids)
    with model.object_slots(contents):
        embedded = model.vlm.get_input_embeddings()(ids)
    torch.testing.assert_close(embedded[0, 0], plain[0, 0] + contents[0, 3])


def test_silhouettes_are_the_mask_inside_its_box():
    from mllm.objects import mask_silhouettes

    logits = torch.full((1, 2, 16, 16), -20.0)
    logits[0, 0, 4:12, 2:6] = 20.0  # a 8 x 4 bar: its box is exactly full
    logits[0, 1, 0:8, 0:8] = 20.0
    logits[0, 1, 0:4, 4:8] = -20.0  # an L: top-right quarter of its box empty
    boxes = torch.tensor([[[4 / 16, 8 / 16, 4 / 16, 8 / 16], [4 / 16, 4 / 16, 8 / 16, 8 / 16]]])
    sil = mask_silhouettes(logits, boxes, 4).reshape(2, 4, 4)
    assert sil[0].min() > 0.99
    assert sil[1, :2, 2:].max() < 0.01 and sil[1, 2:, :].min() > 0.99 and sil[1, :2, :2].min() > 0.99


def test_object_class_scores_are_glee_probabilities_of_the_chosen_queries(image):
    model = make_model(object_class_scores=True, silhouette_size=2)
    batch = _batch(model, image, ["Sure."], [[]])
    with torch.no_grad():
        objects = model.propose(batch.glee)
        out = model.glee(batch.glee.tensor, categories=["circle", "star"])
    mask_dim = model.glee.pixel_decoder.mask_features.out_channels
    plain_dim = mask_dim + 3 + 4
    assert objects.regions.shape == (1, 4, plain_dim + 2) and model.object_projector.region_dim == plain_dim + 2
    assert model.object_projector.region_parts == (mask_dim, 3, 4, 2)  # features, RGB, silhouette, class scores
    probs = out.pred_logits.sigmoid()[0]  # [Q, 2]
    for k in range(4):  # each object's appended scores are the probabilities of the query it came from
        query = int((probs.amax(-1) - objects.scores[0, k]).abs().argmin())
        torch.testing.assert_close(objects.regions[0, k, plain_dim:], probs[query])
    assert torch.allclose(objects.regions[0, :, plain_dim:].amax(-1), objects.scores[0])
    assert model._object_contents(objects).shape == (1, 4, model.llm_hidden_size(model.vlm))


def test_frozen_glee_stays_frozen_and_in_eval_mode(model):
    model.train()
    assert not model.glee.training and not any(p.requires_grad for p in model.glee.parameters())
    assert all(p.requires_grad for p in model.seg_projector.parameters())


def test_mismatched_targets_and_too_many_seg_are_refused(image):
    model = make_model(max_seg_tokens=1)
    h, w = image.shape[:2]
    with pytest.raises(ValueError, match="1 \\[SEG\\] tokens but 2 seg_targets"):
        model(_batch(model, image, ["Sure, [SEG]."], [[box_mask(h, w, 0, 9, 0, 9)] * 2]))
    with pytest.raises(ValueError, match="2 \\[SEG\\] tokens, over max_seg_tokens=1"):
        model(_batch(model, image, ["[SEG] and [SEG]."], [[box_mask(h, w, 0, 9, 0, 9)] * 2]))


def test_each_seg_state_comes_from_its_own_position(model, image):
    """The k-th GLEE prompt is made from the hidden state at the k-th [SEG] position (no one-token shift)."""
    h, w = image.shape[:2]
    masks = [[box_mask(h, w, 0, 40, 0, 40), box_mask(h, w, 50, 90, 0, 60)]]
    batch = _batch(model, image, ["the star [SEG] and the circle [SEG]."], masks)
    seen = []
    handle = model.seg_projector.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        model.eval()(batch)
        contents = model._object_contents(model.propose(batch.glee))
        with model.object_slots(contents):
            states = model.vlm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **batch.vision,
                               output_hidden_states=True).hidden_states[-1][0]
    handle.remove()
    positions = (batch.input_ids[0] == model.token_ids.seg).nonzero()[:, 0]
    assert len(positions) == 2 and torch.allclose(seen[0], states[positions], atol=1e-5)


def _two_box_scene():
    image = np.full((96, 128, 3), 90, np.uint8)
    image[20:70, 10:50] = (220, 30, 30)
    image[30:80, 80:120] = (30, 30, 220)
    return image, box_mask(96, 128, 20, 70, 10, 50), box_mask(96, 128, 30, 80, 80, 120)


def _overfit(steps: int):
    model = make_model(seed=1).train()
    image, left, right = _two_box_scene()
    batch = _batch(model, image, ["the circle [SEG] and the star [SEG]."], [[left, right]])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(steps):
        out = model(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return model, batch, losses


def test_two_seg_answer_loss_goes_down():
    _, _, losses = _overfit(20)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


@pytest.mark.slow
def test_two_seg_answer_learns_each_mask_in_order():
    """Overfit one two-[SEG] answer: the first [SEG] must end up on the left box, the second on the right."""
    model, batch, losses = _overfit(120)
    assert losses[-1] < 0.3 * losses[0], losses
    with torch.no_grad():
        out = model.eval()(batch)
    predicted = (out.seg_masks > 0).numpy()
    targets = batch.seg_targets.numpy() >= 0.5
    overlap = np.array([[(p & t).sum() / max((p | t).sum(), 1) for t in targets] for p in predicted])
    assert overlap[0, 0] > overlap[0, 1] and overlap[1, 1] > overlap[1, 0], overlap


def test_object_proposals_skip_duplicate_boxes():
    from mllm.objects import distinct_topk

    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.21, 0.2], [0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]]])
    top, index = distinct_topk(scores, boxes, 3)
    assert index.tolist() == [[0, 2, 3]] and torch.allclose(top, torch.tensor([[0.9, 0.7, 0.1]]))
    assert distinct_topk(scores, boxes, 4)[1].tolist() == [[0, 2, 3, 1]]  # duplicates fill up when needed


def _slot_states(model, image, question, objects):
    batch = _batch(model, image, ["Sure, [SEG]."], [[box_mask(96, 128, 0, 9, 0, 9)]], question=question)
    contents = model._object_contents(objects)
    with torch.no_grad(), model.object_slots(contents):
        out = model.vlm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **batch.vision,
                        output_hidden_states=True)
    return model._pointer_keys(contents, out.hidden_states[-1], batch.input_ids)


def test_objects_after_the_question_give_question_aware_pointer_keys(image):
    after = make_model(objects_after_question=True, pointer_keys="slots").eval()
    text = after.processor.tokenizer.decode(after.encode(image, [("the circle", "Sure, [SEG].")]).input_ids)
    assert text.index("circle") < text.index("<obj0>")  # the object list follows the question
    objects = after.propose(_batch(after, image, ["Sure."], [[]]).glee)
    circle, star = (_slot_states(after, image, q, objects) for q in ("the circle", "the star"))
    assert circle.shape == (1, 4, 32) and not torch.allclose(circle, star)  # slots see the question
    before = make_model(pointer_keys="slots").eval()  # a causal LLM: slots before the question cannot see it
    circle, star = (_slot_states(before, image, q, objects) for q in ("the circle", "the star"))
    torch.testing.assert_close(circle, star)
    contents = make_model().eval()
    torch.testing.assert_close(_slot_states(contents, image, "the star", objects), contents._object_contents(objects))
    with pytest.raises(ValueError, match="pointer_keys"):
        make_model(pointer_keys="queries")


def test_object_tokens_pixel_boxes_are_the_reported_object_boxes(model, image):
    h, w = image.shape[:2]
    boxes = model.object_tokens(image).pixel_boxes(h, w)
    np.testing.assert_allclose(boxes, model.objects(image).boxes, atol=0.05)
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= w and boxes[:, [1, 3]].max() <= h
