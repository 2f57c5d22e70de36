"""GleePredictor on the tiny model with the official oracle weights: parity of the returned
Detections with the official post-processing (``postprocess.npz``), the Detections contract, the
selection options, input sources, batching and bf16."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glee_core import processing
from glee_core.modeling.glee import GleeModel
from glee_core.predictor import GleePredictor
from glee_core.structures import Categories, Detections, Expression, VisualPrompt
from train.data.shapeworld.scene import scene_seed
from train.data.shapeworld.video import generate_video
from tests.conftest import REFERENCE_DIR, Case, assert_close, load_case

WEIGHTS = REFERENCE_DIR / "weights.safetensors"
NEAR_THRESHOLD = 1e-4
"""Mask pixels whose official logit is this close to 0 may flip (as in glee_core/parity.py)."""


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine extra threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model() -> GleeModel:
    if not WEIGHTS.is_file():
        pytest.skip(f"tiny oracle weights not found at {WEIGHTS}")
    return GleeModel.from_pretrained(WEIGHTS, preset="tiny")


@pytest.fixture(scope="module")
def predictor(tiny_model: GleeModel) -> GleePredictor:
    return GleePredictor(tiny_model)


def case_images(case: Case) -> list[Path]:
    return [case.path / image["file"] for image in case.meta["images"]]


def case_prompt(case: Case) -> Categories | Expression | VisualPrompt:
    prompts = case.meta["prompts"]
    if "categories" in prompts:
        return Categories(prompts["categories"])
    if "expression" in prompts:
        return Expression(prompts["expression"])
    vp = prompts["visual_prompt"]
    return VisualPrompt(boxes=[vp["box_xyxy"]]) if vp["type"] == "box" else VisualPrompt(points=[vp["point_xy"]])


def official_mask_logits(case: Case, i: int, queries: np.ndarray) -> torch.Tensor:
    """The official mask logits of ``queries`` in image ``i``, upsampled to the input size."""
    padded = tuple(case["input.image"].shape[-2:])
    crop = tuple(int(v) for v in case["input.image_sizes"][i])
    original = tuple(case.meta["images"][i]["orig_hw"])
    logits = case["out.pred_masks"][i][torch.as_tensor(queries, dtype=torch.long)]
    return processing.upsample_masks(logits, padded, crop, original)


def assert_matches_official(dets: Detections, case: Case, i: int) -> None:
    """Same (query, label) pairs as the official result; boxes, scores, masks and embeddings agree."""
    post = {k[: -len(f".{i}")]: v for k, v in case.post.items() if k.endswith(f".{i}")}
    ours = {(int(q), int(l)): row for row, (q, l) in enumerate(zip(dets.query_index, dets.labels))}
    pairs = [(int(q), int(l)) for q, l in zip(post["query_index"], post["labels"])]
    assert sorted(ours) == sorted(pairs), "selected (query, label) pairs differ from the official ones"
    order = np.array([ours[p] for p in pairs])
    assert_close(torch.from_numpy(dets.boxes[order]), torch.from_numpy(post["boxes"]), name="boxes")
    official = official_mask_logits(case, i, post["query_index"])
    ref_masks = post["masks"].astype(bool)
    differ = dets.masks[order] != ref_masks
    assert not (differ & (official.abs().numpy() > NEAR_THRESHOLD)).any(), "masks differ away from the threshold"
    flipped = differ.reshape(len(order), -1).any(1)
    score_diff = np.abs(dets.scores[order] - post["scores"])
    assert score_diff[~flipped].max(initial=0) <= 1e-4, f"scores differ by {score_diff.max():.3g}"
    assert score_diff[flipped].max(initial=0) <= 1e-3
    embeds = case["out.pred_track_embed"][i][torch.as_tensor(post["query_index"], dtype=torch.long)]
    assert_close(torch.from_numpy(dets.query_embeds[order]), embeds, name="query_embeds")


@pytest.mark.parametrize("name", ["a_category_det", "e_padding", "f_resize", "b_referring", "c_visual_box",
                                  "c_visual_point"])
def test_parity_single_image(predictor: GleePredictor, name: str):
    case = load_case(name)
    prompt = case_prompt(case)
    dets = predictor.predict(case_images(case)[0], prompt)
    assert dets.image_size == tuple(case.meta["images"][0]["orig_hw"])
    expected = len(case.post["scores.0"])
    assert len(dets) == expected
    if isinstance(prompt, Categories):
        assert expected == 100 and dets.label_names == prompt.names
    else:
        assert expected == 1 and dets.labels.tolist() == [0] and len(dets.label_names) == 1
    assert_matches_official(dets, case, 0)


def test_batch_of_two_sizes_matches_official(predictor: GleePredictor):
    case = load_case("g_batch2")
    results = predictor.predict(case_images(case), case_prompt(case))
    assert isinstance(results, list) and len(results) == 2
    for i, dets in enumerate(results):
        size = tuple(case.meta["images"][i]["orig_hw"])
        assert dets.image_size == size and dets.masks.shape == (100, *size)
        assert_matches_official(dets, case, i)


def test_detections_contract(predictor: GleePredictor):
    case = load_case("f_resize")
    names = case.meta["prompts"]["categories"]
    dets = predictor.predict(case_images(case)[0], Categories(names))
    n = len(dets)
    assert dets.image_size == (192, 256)
    assert dets.boxes.dtype == np.float32 and dets.boxes.shape == (n, 4)
    assert dets.scores.dtype == np.float32 and dets.labels.dtype == np.int64
    assert dets.masks.dtype == np.bool_ and dets.masks.shape == (n, 192, 256)
    assert dets.query_embeds.dtype == np.float32 and dets.query_embeds.shape == (n, 256)
    assert dets.label_names == names and 0 <= dets.labels.min() and dets.labels.max() < len(names)
    assert dets.label_texts[0] == names[dets.labels[0]]
    assert (np.diff(dets.scores) <= 0).all(), "detections are not sorted by score"
    assert (dets.boxes[:, 2:] >= dets.boxes[:, :2]).all()


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_score_threshold_topk_and_nms(predictor: GleePredictor):
    case = load_case("a_category_det")
    image, prompt = case_images(case)[0], case_prompt(case)
    full = predictor.predict(image, prompt)
    threshold = float(np.median(full.scores))
    kept = predictor.predict(image, prompt, score_threshold=threshold)
    expected = full.scores >= threshold
    assert 0 < len(kept) == int(expected.sum()) < len(full)
    np.testing.assert_array_equal(kept.boxes, full.boxes[expected])
    np.testing.assert_array_equal(kept.scores, full.scores[expected])
    np.testing.assert_array_equal(kept.query_index, full.query_index[expected])

    top = predictor.predict(image, prompt, topk=5)
    np.testing.assert_array_equal(top.scores, full.scores[:5])
    np.testing.assert_array_equal(top.masks, full.masks[:5])

    more = predictor.predict(image, prompt, topk=len(full) + 7)  # beyond test_topk (LVIS keeps 300)
    assert len(more) == len(full) + 7 and (np.diff(more.scores) <= 0).all()
    pairs = lambda d: set(zip(d.query_index.tolist(), d.labels.tolist()))  # noqa: E731
    assert pairs(full) < pairs(more)  # the official candidates, plus the next-best (query, class) pairs

    iou = 0.5
    nms = predictor.predict(image, prompt, nms_iou=iou)
    assert 0 < len(nms) < len(full)
    overlaps = pairwise_iou(nms.boxes, nms.boxes)
    np.fill_diagonal(overlaps, 0)
    assert overlaps.max() <= iou, "NMS kept two boxes overlapping more than nms_iou"
    kept_rows = {(int(q), int(l)) for q, l in zip(nms.query_index, nms.labels)}
    for row in range(len(full)):
        if (int(full.query_index[row]), int(full.labels[row])) in kept_rows:
            continue
        suppressors = (pairwise_iou(full.boxes[row : row + 1], nms.boxes)[0] > iou) & (nms.scores >= full.scores[row])
        assert suppressors.any(), f"detection {row} was dropped without a better overlapping box"

    combined = predictor.predict(image, prompt, score_threshold=threshold, nms_iou=iou, topk=3)
    assert len(combined) == 3 and (combined.scores >= threshold).all()
    np.testing.assert_array_equal(combined.boxes, nms.filter(min_score=threshold).boxes[:3])


def test_image_sources_give_identical_results(predictor: GleePredictor):
    path = case_images(load_case("f_resize"))[0]
    array = np.asarray(Image.open(path).convert("RGB"))
    prompt = Categories(["red square", "tree"])
    reference = predictor.predict(path, prompt)
    tensor = torch.from_numpy(array.copy())
    sources = [Image.open(path), array, tensor.permute(2, 0, 1), tensor]
    for source in sources:
        dets = predictor.predict(source, prompt)
        np.testing.assert_array_equal(dets.boxes, reference.boxes)
        np.testing.assert_array_equal(dets.scores, reference.scores)
        np.testing.assert_array_equal(dets.masks, reference.masks)
        np.testing.assert_array_equal(dets.query_embeds, reference.query_embeds)


def test_bfloat16_on_cpu(tiny_model: GleeModel):
    case = load_case("a_category_det")
    image, prompt = case_images(case)[0], case_prompt(case)
    fp32 = GleePredictor(tiny_model).predict(image, prompt)
    bf16_model = GleeModel.from_pretrained(WEIGHTS, preset="tiny")
    predictor = GleePredictor(bf16_model, dtype=torch.bfloat16)
    assert bf16_model.dtype == torch.bfloat16
    dets = predictor.predict(image, prompt)
    assert dets.boxes.dtype == np.float32 and dets.masks.shape == fp32.masks.shape and len(dets) == len(fp32)
    for values in (dets.boxes, dets.scores, dets.query_embeds):
        assert np.isfinite(values).all()
    # Queries are the top encoder proposals, whose order bf16 may change: match detections by box and label.
    overlap = pairwise_iou(fp32.boxes[:10], dets.boxes) * (fp32.labels[:10, None] == dets.labels[None])
    assert overlap.max(1).min() >= 0.8, "a top-10 fp32 detection has no close bf16 counterpart"
    assert np.abs(dets.boxes[overlap[0].argmax()] - fp32.boxes[0]).max() <= 3.0, "top-1 box moved by > 3 px"
    assert np.abs(dets.scores[:10] - fp32.scores[:10]).max() <= 0.02


def test_track_streams_frames_with_stable_ids_and_checks_them():
    video = generate_video(scene_seed("test", 0), split="test")
    predictor = GleePredictor.from_pretrained("nano")
    seen = []
    frames = (f.image for f in video.frames[:4])  # a generator: frames are streamed
    tracks = predictor.track(frames, Expression("the circle"), score_threshold=0.0, on_frame=seen.append)
    assert seen == [0, 1, 2, 3] and len(tracks) == 4
    # One object per frame for an expression; the tracker keeps following it with few new ids.
    assert all(len(f) == 1 and f.masks.shape == (1, 256, 256) for f in tracks.frames)
    assert len(tracks.track_ids) <= 2
    with pytest.raises(ValueError, match=r"frame 1 is 32x32 \(WxH\), frame 0 is 256x256"):
        predictor.track([video.frames[0].image, np.zeros((32, 32, 3), np.uint8)], Categories(["circle"]))
    with pytest.raises(ValueError, match="the video has no frames"):
        predictor.track([], Categories(["circle"]))
