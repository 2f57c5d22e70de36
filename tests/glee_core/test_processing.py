"""Pre- and post-processing against the official fixtures and hand-computed numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from glee_core import processing as P
from glee_core.config import get_preset
from tests.conftest import CASES_DIR, REAL_CASES_DIR, assert_close, load_case, require_reference

TINY_SPEC = get_preset("tiny").input


def _case_dirs() -> list:
    require_reference()
    return sorted(CASES_DIR.iterdir()) + sorted(REAL_CASES_DIR.iterdir())


def _read_image(case, index: int = 0) -> np.ndarray:
    return np.asarray(Image.open(case.path / case.meta["images"][index]["file"]).convert("RGB"))


def test_resized_shape_matches_every_fixture():
    checked = 0
    for case_dir in _case_dirs():
        meta = json.loads((case_dir / "case.json").read_text())
        overrides = meta.get("config_overrides", {})
        min_size = overrides.get("INPUT.MIN_SIZE_TEST", TINY_SPEC.min_size)
        max_size = overrides.get("INPUT.MAX_SIZE_TEST", TINY_SPEC.max_size)
        for image in meta["images"]:
            assert P.resized_shape(*image["orig_hw"], min_size, max_size) == tuple(image["resized_hw"]), case_dir.name
            checked += 1
    assert checked == 18


def test_resized_shape_by_hand():
    assert P.resized_shape(480, 640, 800, 1333) == (800, 1067)
    assert P.resized_shape(100, 1000, 800, 1333) == (133, 1333)
    assert P.resized_shape(640, 480, 160, 224) == (213, 160)
    assert P.resized_shape(300, 300, 1536, 1536) == (1536, 1536)


def test_resize_image_matches_official_uint8():
    case = load_case("f_resize")
    resized = P.resize_image(_read_image(case), TINY_SPEC)
    assert resized.dtype == np.uint8 and resized.shape == (128, 171, 3)
    assert torch.equal(torch.from_numpy(resized.transpose(2, 0, 1).copy()), case["input.image_uint8.0"])


def test_resize_image_keeps_test_size_images():
    case = load_case("e_padding")
    image = _read_image(case)
    np.testing.assert_array_equal(P.resize_image(image, TINY_SPEC), image)


def test_resize_image_lsj_pads_with_128():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    spec = P.InputSpec(lsj=True, lsj_size=64)
    out = P.resize_image(image, spec)
    assert out.shape == (64, 64, 3)
    expected = np.asarray(Image.fromarray(image).resize((64, 48), Image.BILINEAR))
    np.testing.assert_array_equal(out[:48], expected)
    assert np.all(out[48:] == 128.0)


def test_normalize_and_pad_batch_of_two_sizes():
    case = load_case("g_batch2")
    images = [case["input.image_uint8.0"], case["input.image_uint8.1"]]
    batch = P.normalize_and_pad(images, TINY_SPEC)
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 160, 192)
    assert_close(batch, case["input.image"], atol=1e-6, name="input.image")
    assert torch.all(batch[1, :, :, 128:] == 0) and torch.all(batch[0, :, 128:] == 0)


def test_preprocess_resizes_normalises_and_pads():
    case = load_case("f_resize")
    batch = P.preprocess([_read_image(case)], TINY_SPEC)
    assert batch.image_sizes == [(128, 171)] and batch.original_sizes == [(192, 256)]
    assert batch.padded_size == (128, 192)
    assert batch.image_sizes == [tuple(s) for s in case["input.image_sizes"].tolist()]
    assert_close(batch.tensor, case["input.image"], atol=1e-6, name="input.image")


def test_box_cxcywh_to_xyxy():
    boxes = torch.tensor([[0.25, 0.5, 0.1, 0.2]])
    assert torch.allclose(P.box_cxcywh_to_xyxy(boxes), torch.tensor([[0.2, 0.4, 0.3, 0.6]]))


def test_scale_boxes_standard_and_lsj_by_hand():
    # padded 100x200, valid region 50x100, original 150x300
    boxes = torch.tensor([[0.25, 0.5, 0.1, 0.2], [0.0, 0.0, 0.2, 0.2]])
    standard = P.scale_boxes(boxes, (100, 200), (50, 100), (150, 300), lsj=False)
    # x * 200 / 100 * 300 = 600 x; y * 100 / 50 * 150 = 300 y; not clamped
    assert torch.allclose(standard, torch.tensor([[120.0, 120.0, 180.0, 180.0], [-60.0, -30.0, 60.0, 30.0]]))
    lsj = P.scale_boxes(boxes, (100, 200), (50, 100), (150, 300), lsj=True)
    # relative (x2) clamped to [0, 1], then x 300 / y 150
    assert torch.allclose(lsj, torch.tensor([[120.0, 120.0, 180.0, 150.0], [0.0, 0.0, 60.0, 30.0]]))


@pytest.mark.parametrize("name, lsj", [("f_resize", False), ("lite_r50_a_category", False),
                                       ("pro_eva02l_a_category", True)])
def test_scale_boxes_matches_official(name, lsj):
    """The Pro config sets DATASET_MAPPER_NAME coco_instance_lsj, so its post-processing is the LSJ rule."""
    case = load_case(name)
    original = tuple(case.meta["images"][0]["orig_hw"])
    crop = P.valid_region(tuple(case.meta["images"][0]["resized_hw"]), original, lsj)
    boxes = P.scale_boxes(case["out.pred_boxes"][0], tuple(case.meta["padded_hw"]), crop, original, lsj)
    assert_close(boxes, case["post.in_boxes_xyxy.0"], name=f"{name} boxes")


def test_valid_region():
    assert P.valid_region((128, 171), (192, 256), lsj=False) == (128, 171)
    # LSJ: image_size[0] / max(H0, W0) * (H0, W0), truncated
    assert P.valid_region((1536, 1536), (480, 640), lsj=True) == (1152, 1536)
    assert P.valid_region((160, 280), (200, 350), lsj=True) == (91, 160)
    assert P.valid_region((1536, 1536), (1000, 300), lsj=True) == (1536, 460)


def test_upsample_masks_shapes_and_values():
    logits = torch.arange(4.0).view(1, 2, 2)
    out = P.upsample_masks(logits, (4, 4), (2, 4), (1, 2))
    full = torch.nn.functional.interpolate(logits[None], size=(4, 4), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.interpolate(full[..., :2, :4], size=(1, 2), mode="bilinear", align_corners=False)[0]
    assert out.shape == (1, 1, 2) and torch.equal(out, expected)
    video = P.upsample_masks(torch.zeros(3, 2, 8, 8), (32, 32), (30, 20), (60, 40))
    assert video.shape == (3, 2, 60, 40)


def test_mask_scores_by_hand():
    logits = torch.tensor([[[1.0, -1.0], [2.0, -3.0]], [[-1.0, -2.0], [-3.0, -4.0]]])
    expected_first = (torch.sigmoid(torch.tensor(1.0)) + torch.sigmoid(torch.tensor(2.0))) / (2 + 1e-6)
    scores = P.mask_scores(logits)
    assert torch.allclose(scores, torch.stack([expected_first, torch.tensor(0.0)]), atol=1e-7)


def _by_pair(result: P.InstanceResult) -> dict[tuple[int, int], int]:
    return {(int(q), int(k)): i for i, (q, k) in enumerate(zip(result.query_index, result.labels))}


def test_instance_inference_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0], [3.0, -2.0]])  # flat: 0, 2, -1, 1, 3, -2
    masks = torch.tensor([[[1.0, -1.0], [2.0, -3.0]],
                          [[-1.0, -2.0], [-3.0, -4.0]],
                          [[4.0, 4.0], [4.0, 4.0]]])
    boxes = torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])
    result = P.instance_inference(logits, masks, boxes, topk=3)
    pairs = _by_pair(result)
    assert set(pairs) == {(2, 0), (0, 1), (1, 1)}  # flat indices 4, 1, 3 -> query = i // 2, label = i % 2
    mask_score = P.mask_scores(masks)
    for (q, k), i in pairs.items():
        prob = torch.sigmoid(logits[q, k])
        assert torch.allclose(result.prob[i], prob)
        assert torch.allclose(result.scores[i], prob * mask_score[q])
        assert torch.equal(result.boxes[i], boxes[q]) and torch.equal(result.mask_logits[i], masks[q])
    assert result.scores[pairs[(1, 1)]] == 0  # its mask is empty
    best = torch.sigmoid(torch.tensor(3.0)) * torch.sigmoid(torch.tensor(4.0))
    assert torch.allclose(result.scores[pairs[(2, 0)]], best, atol=1e-6)
    assert torch.equal(result.masks, result.mask_logits > 0)
    everything = P.instance_inference(logits, masks, boxes, topk=100, mask_score=False)
    assert len(everything.scores) == 6 and torch.equal(everything.scores, everything.prob)


@pytest.mark.parametrize("name, topk", [("a_category_det", 100), ("b_referring", 1)])
def test_instance_inference_matches_official(name, topk):
    case = load_case(name)
    original = tuple(case.meta["images"][0]["orig_hw"])
    crop = tuple(case.meta["images"][0]["resized_hw"])
    masks = P.upsample_masks(case["out.pred_masks"][0], tuple(case.meta["padded_hw"]), crop, original)
    result = P.instance_inference(case["post.in_logits.0"], masks, case["post.in_boxes_xyxy.0"], topk=topk)
    post = case.post
    assert len(result.scores) == len(post["scores.0"]) == topk
    pairs = _by_pair(result)
    order = [pairs[(int(q), int(k))] for q, k in zip(post["query_index.0"], post["labels.0"])]
    assert_close(result.scores[order], torch.from_numpy(post["scores.0"]), name="scores")
    assert_close(result.prob[order], torch.from_numpy(post["prob.0"]), name="prob")
    assert_close(result.boxes[order], torch.from_numpy(post["boxes.0"]), name="boxes")
    certain = result.mask_logits[order].abs() > 1e-3
    assert torch.equal(result.masks[order][certain], torch.from_numpy(post["masks.0"]).bool()[certain])


def test_visual_prompt_inference_by_hand():
    logits = torch.tensor([[0.0, 2.0], [3.0, -2.0], [1.0, 1.0]])
    boxes = torch.arange(12.0).view(3, 4)
    result = P.visual_prompt_inference(logits, torch.zeros(3, 2, 2), boxes, topk=2)
    assert result.query_index.tolist() == [1, 0] and result.labels.tolist() == [0, 1]
    assert torch.allclose(result.scores, torch.sigmoid(torch.tensor([3.0, 2.0])))
    assert torch.equal(result.boxes, boxes[[1, 0]])


def test_visual_prompt_inference_matches_official():
    case = load_case("c_visual_box")
    original, padded = tuple(case.meta["images"][0]["orig_hw"]), tuple(case.meta["padded_hw"])
    crop = tuple(case.meta["images"][0]["resized_hw"])
    boxes = P.scale_boxes(case["out.pred_boxes"][0], padded, crop, original, lsj=True)
    masks = P.upsample_masks(case["out.pred_masks"][0], padded, crop, original)
    result = P.visual_prompt_inference(case["out.pred_logits"][0], masks, boxes)
    post = case.post
    assert result.query_index.tolist() == post["query_index.0"].tolist()
    assert result.labels.tolist() == post["labels.0"].tolist()
    assert_close(result.scores, torch.from_numpy(post["scores.0"]), name="scores")
    assert_close(result.boxes, torch.from_numpy(post["boxes.0"]), name="boxes")
    certain = result.mask_logits.abs() > 1e-3
    assert torch.equal(result.masks[certain], torch.from_numpy(post["masks.0"]).bool()[certain])


def test_upsampling_only_the_kept_queries_equals_upsampling_all():
    g = torch.Generator().manual_seed(0)
    logits, low = torch.randn(12, 5, generator=g), torch.randn(12, 6, 8, generator=g)
    boxes = torch.rand(12, 4, generator=g)
    sizes = []

    def upsample(masks):
        sizes.append(len(masks))
        return P.upsample_masks(masks, (24, 32), (20, 30), (40, 60))

    everything = P.instance_inference(logits, P.upsample_masks(low, (24, 32), (20, 30), (40, 60)), boxes, topk=20)
    selected = P.instance_inference(logits, low, boxes, topk=20, upsample=upsample)
    assert sizes == [len(torch.unique(selected.query_index))] and sizes[0] < 20  # duplicates upsampled once
    for name in ("scores", "labels", "query_index", "mask_logits", "boxes"):
        assert torch.equal(getattr(selected, name), getattr(everything, name)), name
