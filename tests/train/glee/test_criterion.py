"""SetCriterion: hand-computed normalisation, perfect vs worse predictions, gradients, optimisation, DN."""
from __future__ import annotations

import math

import pytest
import torch

from glee_core.modeling.decoder import DecoderOutput, MaskDINODecoder, PromptMode
from train.glee.criterion import LossWeights, SetCriterion, denoising_indices
from train.glee.matcher import HungarianMatcher, Target

LN2 = math.log(2)
BASE_KEYS = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_conf")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _criterion(num_points: int = 256, **kwargs) -> SetCriterion:
    return SetCriterion(HungarianMatcher(num_points=num_points), num_points=num_points, **kwargs)


def _output(logits: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, masks: torch.Tensor,
            steps: int = 2) -> DecoderOutput:
    """A decoder output whose every step (and the two-stage head) repeats the given [B, Q, ...] predictions."""
    batch, queries = logits.shape[:2]
    stack = lambda x: x.unsqueeze(0).expand(steps, *x.shape)  # noqa: E731
    return DecoderOutput(
        pred_logits=logits, pred_boxes=boxes, pred_masks=masks, pred_scores=scores,
        pred_track_embed=torch.zeros(batch, queries, 8), layer_logits=stack(logits), layer_boxes=stack(boxes),
        layer_scores=stack(scores), layer_masks=[masks] * steps, hs=torch.zeros(steps - 1, batch, queries, 8),
        references=torch.zeros(steps, batch, queries, 4), interm_logits=logits, interm_boxes=boxes,
        interm_scores=scores, interm_masks=masks, proposal_scores=torch.zeros(batch, queries),
        proposal_index=torch.arange(queries).expand(batch, -1),
    )


def _rect_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    centre = (torch.arange(size) + 0.5) / size
    lo, hi = boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2
    inside_x = (centre >= lo[:, :1]) & (centre <= hi[:, :1])
    inside_y = (centre >= lo[:, 1:]) & (centre <= hi[:, 1:])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()


TARGET = Target(labels=torch.tensor([1, 0]), boxes=torch.tensor([[0.3, 0.3, 0.3, 0.2], [0.7, 0.6, 0.2, 0.4]]),
                masks=_rect_masks(torch.tensor([[0.3, 0.3, 0.3, 0.2], [0.7, 0.6, 0.2, 0.4]]), 128))


def _perfect(queries: int = 5, size: int = 128):
    """Queries 3 and 1 predict targets 0 and 1 exactly (logits +-10, mask logits +-12); the rest predict nothing."""
    logits = torch.full((1, queries, 2), -10.0)
    boxes = torch.full((1, queries, 4), 0.1)
    scores = torch.zeros(1, queries, 1)
    masks = torch.full((1, queries, size, size), -12.0)
    target_masks = _rect_masks(TARGET.boxes, size)
    for q, t in ((3, 0), (1, 1)):
        logits[0, q, TARGET.labels[t]] = 10.0
        boxes[0, q] = TARGET.boxes[t]
        masks[0, q] = 24 * target_masks[t] - 12
    return logits, boxes, scores, masks


def test_keys_and_weights():
    losses = _criterion(64)(_output(*_perfect(size=32)), [TARGET], generator=_gen())
    suffixes = ["", "_0", "_interm"]  # steps = 2: final, the initial prediction, the two-stage head
    assert set(losses) == {k + s for k in BASE_KEYS for s in suffixes} | {"loss"}
    assert losses["loss"].item() == pytest.approx(sum(v.item() for k, v in losses.items() if k != "loss"))
    weights = LossWeights()
    assert (weights.cls, weights.bbox, weights.giou, weights.mask, weights.dice, weights.conf) == (4, 5, 2, 5, 5, 4)
    assert weights.of("loss_giou_dn_3") == 2.0 and weights.of("loss_ce_interm") == 4.0


def test_hand_computed_class_box_and_conf_losses():
    """One target, two queries with logit 0: focal = 0.25 ln2 in all (pos 1/16 ln2 + neg 3/16 ln2), / 1 box."""
    target = Target(torch.tensor([0]), torch.tensor([[0.5, 0.5, 0.2, 0.2]]), None)
    logits = torch.zeros(1, 2, 1)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]]])
    boxes[0, 0, 0] += 0.1  # query 0 off by 0.1 in cx; query 1 equally off: either may match
    scores = torch.zeros(1, 2, 1)
    output = _output(logits, boxes, scores, torch.zeros(1, 2, 8, 8))
    losses = _criterion(16)(output, [target], visual_prompt=True)
    assert losses["loss_ce"].item() == pytest.approx(4 * 0.25 * LN2, rel=1e-5)
    assert losses["loss_bbox"].item() == pytest.approx(5 * 0.1, rel=1e-4)
    # shifted by half a width: iou = 1/3, hull = union -> giou = 1/3
    assert losses["loss_giou"].item() == pytest.approx(2 * (1 - 1 / 3), rel=1e-4)
    # conf: focal over the 2 queries (matched -> 1) summed, averaged over queries: 0.125 ln2
    assert losses["loss_conf"].item() == pytest.approx(4 * 0.125 * LN2, rel=1e-5)
    assert losses["loss_conf_0"].item() == pytest.approx(4 * 0.125 * LN2, rel=1e-5)
    assert losses["loss_conf_interm"].item() == 0.0  # official: the two-stage outputs carry no visual flag
    assert losses["loss_mask"].item() == 0.0  # the target has no masks
    assert _criterion(16)(output, [target])["loss_conf"].item() == 0.0


def test_num_boxes_reducer_scales_the_normalisation():
    target = Target(torch.tensor([0]), torch.tensor([[0.5, 0.5, 0.2, 0.2]]), None)
    output = _output(torch.zeros(1, 2, 1), torch.full((1, 2, 4), 0.3), torch.zeros(1, 2, 1), torch.zeros(1, 2, 4, 4))
    local = _criterion(16)(output, [target])
    averaged = _criterion(16, num_boxes_reducer=lambda count: count * 4)(output, [target])
    assert averaged["loss_bbox"].item() == pytest.approx(local["loss_bbox"].item() / 4)
    assert averaged["loss_ce"].item() == pytest.approx(local["loss_ce"].item() / 4)


def test_perfect_predictions_give_near_zero_losses_and_worse_ones_more():
    criterion = _criterion(512)
    matched = []
    perfect = criterion(_output(*_perfect()), [TARGET], generator=_gen(), matched=matched)
    assert len(matched) == 1 and sorted(zip(matched[0][0].tolist(), matched[0][1].tolist())) == [(1, 1), (3, 0)]
    assert perfect["loss_bbox"].item() == 0.0
    assert perfect["loss_giou"].item() == pytest.approx(0.0, abs=1e-5)
    assert perfect["loss_ce"].item() < 1e-3
    # bilinear sampling across the mask edges leaves a small residue (official behaviour); unweighted < 0.05
    assert perfect["loss_mask"].item() / 5 < 0.05 and perfect["loss_dice"].item() / 5 < 0.05

    logits, boxes, scores, masks = _perfect()
    gen = _gen(1)
    worse = criterion(_output(torch.zeros_like(logits), boxes + 0.05 * torch.randn(boxes.shape, generator=gen), scores,
                              masks.roll(shifts=(6, 6), dims=(2, 3))), [TARGET], generator=_gen())
    for key in ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss"):
        assert worse[key].item() > perfect[key].item() + 0.1, key


def test_gradients_reach_logits_boxes_and_masks():
    logits, boxes, scores, masks = (x.clone().requires_grad_() for x in _perfect(size=32))
    with torch.no_grad():
        boxes.add_(0.02)
        masks.mul_(0.1)
    losses = _criterion(64)(_output(logits, boxes, scores, masks), [TARGET], generator=_gen())
    losses["loss"].backward()
    for tensor in (logits, boxes, masks):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    assert scores.grad.abs().sum() == 0  # no visual prompt: zero-weight terms only
    logits.grad = None
    _criterion(64)(_output(logits, boxes, scores, masks), [TARGET], visual_prompt=True)["loss"].backward()
    assert scores.grad.abs().sum() > 0


def test_images_without_targets():
    empty = Target(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0, 128, 128))
    logits, boxes, scores, masks = (x.expand(2, *x.shape[1:]).clone().requires_grad_() for x in _perfect())
    losses = _criterion(64)(_output(logits, boxes, scores, masks), [empty, TARGET], generator=_gen())
    assert all(torch.isfinite(v) for v in losses.values())
    alone = _criterion(64)(_output(logits[:1], boxes[:1], scores[:1], masks[:1]), [empty], generator=_gen())
    assert all(torch.isfinite(v) for v in alone.values())
    assert alone["loss_bbox"].item() == 0.0 and alone["loss_mask"].item() == 0.0
    assert alone["loss_ce"].item() > 0  # negatives only
    alone["loss"].backward()
    assert torch.isfinite(boxes.grad).all()


def test_optimising_raw_predictions_lowers_the_loss():
    torch.manual_seed(0)
    params = [torch.randn(1, 6, 2).requires_grad_(), torch.rand(1, 6, 4).requires_grad_(),
              torch.zeros(1, 6, 1).requires_grad_(), torch.randn(1, 6, 16, 16).requires_grad_()]
    target = Target(TARGET.labels, TARGET.boxes, _rect_masks(TARGET.boxes, 16))
    criterion = _criterion(64)
    optimiser = torch.optim.Adam(params, lr=0.1)
    history = []
    for step in range(50):
        losses = criterion(_output(*params), [target], generator=_gen(step))
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append(losses)
    first, last = history[0], history[-1]
    assert last["loss"].item() < 0.3 * first["loss"].item()
    for key in ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"):
        assert last[key].item() < 0.6 * first[key].item(), key


# --------------------------------------------------------------------------- denoising
def _small_decoder(**kwargs) -> MaskDINODecoder:
    torch.manual_seed(0)
    return MaskDINODecoder(hidden_dim=32, num_queries=8, nheads=2, dim_feedforward=32, dec_layers=2, mask_dim=32,
                           dim_projection=16, dn_num=6, **kwargs).train()


def _decode(decoder: MaskDINODecoder, targets: list[Target]):
    gen = _gen(2)
    features = [torch.randn(len(targets), 32, s, s, generator=gen) for s in (8, 4, 2, 1)]
    mask_features = torch.randn(len(targets), 32, 16, 16, generator=gen)
    dn = decoder.prepare_for_dn([t.labels for t in targets], [t.boxes for t in targets],
                                label_encoder="coco_label_enc", generator=gen)
    output = decoder(features, mask_features, mode=PromptMode.CATEGORY,
                     class_embeddings=torch.randn(3, 16, generator=gen), denoising=dn)
    return output, dn


def test_denoising_indices_follow_the_group_layout():
    decoder = _small_decoder(noise_scale=0.0)
    targets = [Target(torch.tensor([1, 2]), TARGET.boxes), Target(torch.tensor([0]), TARGET.boxes[:1])]
    dn = decoder.prepare_for_dn([t.labels for t in targets], [t.boxes for t in targets],
                                label_encoder="coco_label_enc")
    assert (dn.single_pad, dn.num_groups) == (2, 3)
    indices = denoising_indices(dn, targets)
    assert indices[0][0].tolist() == [0, 1, 2, 3, 4, 5] and indices[0][1].tolist() == [0, 1] * 3
    assert indices[1][0].tolist() == [0, 2, 4] and indices[1][1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="image 0"):
        denoising_indices(dn, [Target(torch.tensor([2, 1]), TARGET.boxes), targets[1]])


def test_denoising_losses_with_a_real_decoder():
    decoder = _small_decoder()
    empty = Target(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0, 64, 64))
    targets = [Target(TARGET.labels, TARGET.boxes, _rect_masks(TARGET.boxes, 64)), empty]
    output, dn = _decode(decoder, targets)
    losses = _criterion(64)(output, targets, denoising=dn, generator=_gen())
    dn_keys = {k + s for k in BASE_KEYS[:5] for s in ("_dn", "_dn_0", "_dn_1")}
    assert dn_keys <= set(losses)
    assert not any(k.startswith("loss_conf_dn") for k in losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(losses[k].item() > 0 for k in dn_keys)
    sum(losses[k] for k in dn_keys).backward()
    # the DN losses reach the label encoder that embeds the noised labels, and the mask head
    assert decoder.coco_label_enc.weight.grad.abs().sum() > 0
    assert decoder.mask_embed.layers[0].weight.grad.abs().sum() > 0

    boxes_only = _criterion(64, dn_masks=False)(output, targets, denoising=dn, generator=_gen())
    assert "loss_mask_dn" not in boxes_only and "loss_bbox_dn_1" in boxes_only
    with pytest.raises(ValueError, match="no DN predictions"):
        _criterion(64)(_output(*_perfect(size=32)), [TARGET], denoising=dn)


def test_denoising_loss_normalised_by_groups():
    """DN box losses are divided by num_boxes * num_groups: perfect-count check via a hand L1."""
    decoder = _small_decoder()
    targets = [Target(TARGET.labels, TARGET.boxes, None)]
    output, dn = _decode(decoder, targets)
    losses = _criterion(16)(output, targets, denoising=dn)
    pred = output.denoising.layer_boxes[-1][0, dn.query_index].clamp(0, 1)
    expected_l1 = (pred - dn.known_boxes).abs().sum() / (len(TARGET) * dn.num_groups)
    assert losses["loss_bbox_dn"].item() == pytest.approx(5 * expected_l1.item(), rel=1e-5)
