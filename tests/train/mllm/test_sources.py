"""The LISA sources on shapeworld written in the official formats: masks equal the ground truth (decoded
independently: the generator's own objects, the official readers), one ``[SEG]`` per mask, questions from the
templates, determinism; the templates' checks; every bad-input error names its problem."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mllm.tokens import SEG_TOKEN
from train.cli import app
from train.data.errors import DatasetFormatError, MissingImageError
from train.data.readers import read_explanatory, read_reasonseg
from train.data.shapeworld.export import item_id
from train.data.shapeworld.scene import generate_scene, scene_seed
from train.data.shapeworld.vocab import CATEGORY_NAMES
from train.mllm.shapeworld_mixture import write_shapeworld_mixture
from train.mllm.sources import (ReasonSegSource, ReferSegSource, SemSegSource, VqaSource, ade20k_classes,
                                cocostuff_classes, read_class_names)
from train.mllm.templates import DEFAULT_PATH, IMAGE_TOKEN, TemplateError, Templates, fill

N, SEED, SPLIT = 3, 5, "train"
TEMPLATES = Templates.load()
CLASSES = ade20k_classes(CATEGORY_NAMES)


def pattern(templates, **values: str) -> re.Pattern:
    """Regex matching any of ``templates`` with placeholders filled by ``values`` or, when not given, any text."""
    def one(template: str) -> str:
        parts = re.split(r"\{(\w+)\}", template)
        if all(p in values for p in parts[1::2]):
            return re.escape(fill(template, **{p: values[p] for p in parts[1::2]}))
        return "".join(re.escape(p) if i % 2 == 0 else (re.escape(values[p]) if p in values else "(.+)")
                       for i, p in enumerate(parts))
    return re.compile("|".join(f"(?:{one(t)})" for t in templates))


SHORT = pattern(TEMPLATES.short_questions)
ANSWER = pattern(TEMPLATES.answers, seg=SEG_TOKEN)


def scene(index: int):
    return generate_scene(scene_seed(SPLIT, index, SEED), split=SPLIT)


def check_sample(sample, name: str) -> None:
    assert sample.source == name and sample.image.dtype == np.uint8 and sample.image.ndim == 3
    assert sum(answer.count(SEG_TOKEN) for _, answer in sample.turns) == len(sample.masks)
    assert all(IMAGE_TOKEN not in question and SEG_TOKEN not in question for question, _ in sample.turns)
    for mask in sample.masks:
        assert mask.dtype == bool and mask.shape == sample.image.shape[:2] and mask.any()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixture")
    return out, write_shapeworld_mixture(out, SPLIT, N, SEED)


@pytest.fixture
def copy(data, tmp_path):
    """A private copy of the written data (for tests that break it)."""
    out, _ = data
    return shutil.copytree(out, tmp_path / "data")


def semseg(root, **kwargs) -> SemSegSource:
    return SemSegSource(root / "semseg" / "images" / SPLIT, root / "semseg" / "annotations" / SPLIT, CLASSES, **kwargs)


# ---- semantic segmentation -------------------------------------------------------------------------------------

def test_semseg_masks_are_the_classes_pixels(data):
    out, paths = data
    assert read_class_names(paths["sem_seg"] / "classes.txt") == CATEGORY_NAMES
    source = semseg(out, seed=SEED)
    assert len(source) == N
    for index in range(2 * N):
        sample = source.sample(index)
        check_sample(sample, "sem_seg")
        expected = scene(index % N)
        np.testing.assert_array_equal(sample.image, expected.image)
        present = {obj.shape for obj in expected.objects if obj.area}
        assert 1 <= len(sample.masks) == min(3, len(present)) == len(set(sample.meta["classes"]))
        for (question, answer), name, mask in zip(sample.turns, sample.meta["classes"], sample.masks):
            truth = np.zeros_like(mask)
            for obj in expected.objects:
                if obj.shape == name:
                    truth |= obj.mask
            np.testing.assert_array_equal(mask, truth)
            assert pattern(TEMPLATES.short_questions, object=name).fullmatch(question) and ANSWER.fullmatch(answer)


def test_semseg_joined_packing_names_all_classes_in_mask_order(data):
    out, _ = data
    sample = semseg(out, packing="joined", seed=SEED).sample(0)
    assert len(sample.turns) == 1 and len(sample.masks) >= 2
    question, answer = sample.turns[0]
    objects = TEMPLATES.join([f"the {name}" for name in sample.meta["classes"]])
    assert pattern(TEMPLATES.multi_questions, objects=objects).fullmatch(question)
    assert answer.count(SEG_TOKEN) == len(sample.masks)


def test_class_maps():
    assert ade20k_classes(["wall", "building"]) == {1: "wall", 2: "building"}  # ADE 0 = other is not a class
    assert cocostuff_classes(["person", "bicycle", "wall-brick", "grass"]) == {0: "person", 1: "bicycle", 3: "grass"}


def test_semseg_bad_inputs(copy):
    images, labels = copy / "semseg" / "images" / SPLIT, copy / "semseg" / "annotations" / SPLIT
    with pytest.raises(FileNotFoundError, match="labels folder not found.*nowhere"):
        SemSegSource(images, copy / "nowhere", CLASSES)
    with pytest.raises(ValueError, match="class_names is empty"):
        SemSegSource(images, labels, {})
    with pytest.raises(ValueError, match="packing must be one of"):
        SemSegSource(images, labels, CLASSES, packing="stacked")
    stem = f"{item_id(SPLIT, 1):012d}"
    # a label whose size differs from its image: refused at construction, or at sampling without the header check
    label = np.asarray(Image.open(labels / f"{stem}.png"))
    Image.fromarray(label[:-8]).save(labels / f"{stem}.png")
    with pytest.raises(DatasetFormatError, match=rf"{stem}\.png: label {stem}: size 256x248 .*differs from .*images.*{stem}\.png \(256x256\)"):
        SemSegSource(images, labels, CLASSES)
    source = SemSegSource(images, labels, CLASSES, check_sizes=False)
    with pytest.raises(DatasetFormatError, match=rf"label {stem}: size 256x248 .*differs from"):
        source.sample(1)
    (labels / f"{stem}.png").unlink()
    with pytest.raises(DatasetFormatError, match=rf"image {stem}: no label .*{stem}\.png"):
        SemSegSource(images, labels, CLASSES)
    Image.fromarray(label).save(labels / f"{stem}.png")
    (images / f"{stem}.png").unlink()
    with pytest.raises(MissingImageError, match=rf"label {stem}: image not found"):
        SemSegSource(images, labels, CLASSES)


def test_semseg_skips_labels_without_classes_and_refuses_when_none_has_any(copy):
    images, labels = copy / "semseg" / "images" / SPLIT, copy / "semseg" / "annotations" / SPLIT
    first = labels / f"{item_id(SPLIT, 0):012d}.png"
    Image.fromarray(np.zeros_like(np.asarray(Image.open(first)))).save(first)
    source = SemSegSource(images, labels, CLASSES)
    assert source.sample(0).meta["label"] == str(labels / f"{item_id(SPLIT, 1):012d}.png")
    with pytest.raises(ValueError, match="no label holds any class"):
        SemSegSource(images, labels, {200: "nothing"}).sample(0)


# ---- referring segmentation -------------------------------------------------------------------------------------

def test_refer_masks_are_the_referred_objects(data):
    out, _ = data
    source = ReferSegSource(out, "shapeworld", "unc", SPLIT, seed=SEED)
    assert len(source) == N
    seen = 0
    for index in range(2 * N):
        sample = source.sample(index)
        check_sample(sample, "refer_seg")
        expected = scene(index % N)
        np.testing.assert_array_equal(sample.image, expected.image)
        assert sample.meta["image_id"] == item_id(SPLIT, index % N) and 1 <= len(sample.masks) <= 3
        assert len(set(sample.meta["sentences"])) == len(sample.meta["sentences"])  # drawn without replacement
        for (question, answer), ref_id, sentence, mask in zip(sample.turns, sample.meta["ref_ids"],
                                                              sample.meta["sentences"], sample.masks):
            target = ref_id - sample.meta["image_id"] * 1000 - 1
            np.testing.assert_array_equal(mask, expected.objects[target].mask)
            assert pattern(TEMPLATES.short_questions, object=sentence).fullmatch(question) and ANSWER.fullmatch(answer)
            seen += 1
    assert seen > 2 * N  # several sentences per image


def test_refer_joined_packing(data):
    out, _ = data
    sample = ReferSegSource(out, "shapeworld", "unc", SPLIT, packing="joined", max_sentences=2, seed=SEED).sample(0)
    assert len(sample.turns) == 1 and len(sample.masks) == 2 and sample.turns[0][1].count(SEG_TOKEN) == 2


def test_refer_bad_inputs(copy):
    with pytest.raises(FileNotFoundError, match=r"refs\(google\)\.p"):
        ReferSegSource(copy, "shapeworld", "google", SPLIT)
    with pytest.raises(ValueError, match="max_sentences must be >= 1"):
        ReferSegSource(copy, "shapeworld", "unc", SPLIT, max_sentences=0)
    image = copy / "images" / "shapeworld" / f"{item_id(SPLIT, 2):012d}.png"
    Image.open(image).crop((0, 0, 100, 100)).save(image)
    source = ReferSegSource(copy, "shapeworld", "unc", SPLIT)
    with pytest.raises(DatasetFormatError, match=rf"instances\.json: image_id {item_id(SPLIT, 2)}: size 256x256 .*differs from .*\(100x100\)"):
        source.sample(2)
    image.unlink()
    with pytest.raises(MissingImageError, match=rf"image not found: .*{image.name}"):
        ReferSegSource(copy, "shapeworld", "unc", SPLIT)


# ---- VQA -------------------------------------------------------------------------------------------------------

def test_vqa_is_the_conversation_without_masks(data):
    out, paths = data
    items = json.loads(paths["vqa"].read_text())
    source = VqaSource(paths["vqa"], out / SPLIT)
    assert len(source) == N
    for index, item in enumerate(items):
        sample = source.sample(index)
        check_sample(sample, "vqa")
        assert sample.masks == [] and sample.meta["id"] == item["id"]
        np.testing.assert_array_equal(sample.image, scene(index).image)
        values = [turn["value"] for turn in item["conversations"]]
        values[0] = values[0].replace(IMAGE_TOKEN, "").strip()
        assert sample.turns == list(zip(values[0::2], values[1::2]))


def test_vqa_bad_inputs(copy):
    path = copy / f"llava_{SPLIT}.json"
    with pytest.raises(FileNotFoundError, match="LLaVA conversation file not found"):
        VqaSource(copy / "llava_nothing.json", copy / SPLIT)
    items = json.loads(path.read_text())
    path.write_text(json.dumps(items[:1] + [{**items[1], "conversations": items[1]["conversations"][:3]}]))
    with pytest.raises(DatasetFormatError, match=f"id {items[1]['id']}: ends with a human turn"):
        VqaSource(path, copy / SPLIT)
    text_only = {"id": "t", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
    path.write_text(json.dumps(items + [text_only]))
    with pytest.raises(DatasetFormatError, match="id t: has no 'image'"):
        VqaSource(path, copy / SPLIT)
    path.write_text(json.dumps(items))
    (copy / SPLIT / items[0]["image"]).unlink()
    with pytest.raises(MissingImageError, match=f"image not found: .*{items[0]['image']}"):
        VqaSource(path, copy / SPLIT)


# ---- ReasonSeg -------------------------------------------------------------------------------------------------

def test_reasonseg_masks_and_explanatory_answers(data):
    out, paths = data
    records = read_reasonseg(paths["reason_seg"])
    explanations = {e.image: e.outputs for e in read_explanatory(paths["reason_seg_explanatory"])}
    source = ReasonSegSource(paths["reason_seg"], paths["reason_seg_explanatory"], seed=SEED)
    assert len(source) == len(records) > N and explanations
    modes = set()
    for index in range(60):
        sample = source.sample(index)
        check_sample(sample, "reason_seg")
        record = records[index % len(records)]
        height, width = sample.image.shape[:2]
        truth = record.mask(height, width)
        assert set(sample.meta["texts"]) <= set(record.texts)
        mode = sample.meta["explanatory"]
        modes.add(mode)
        explanation = explanations.get(record.image_path.name)
        if explanation is None:
            assert mode == "plain"
        if mode == "text_only":
            assert sample.masks == [] and sample.turns == [(text, explanation) for text in sample.meta["texts"]]
            continue
        assert len(sample.masks) == len(sample.meta["texts"])
        for mask in sample.masks:
            np.testing.assert_array_equal(mask, truth == 1)
        np.testing.assert_array_equal(sample.meta["ignore"], truth == 255)
        for (question, answer), text in zip(sample.turns, sample.meta["texts"]):
            if mode == "explained":
                assert pattern(TEMPLATES.explanatory_suffixes).fullmatch(question[len(text) + 1:])
                assert question.startswith(text) and answer.endswith(" " + explanation)
                assert ANSWER.fullmatch(answer[: -len(explanation) - 1])
            else:
                questions = TEMPLATES.long_questions if record.is_sentence else TEMPLATES.short_questions
                assert pattern(questions, sentence=text, object=text).fullmatch(question) and ANSWER.fullmatch(answer)
    assert modes == {"plain", "explained", "text_only"}
    assert all(ReasonSegSource(paths["reason_seg"], seed=SEED).sample(i).meta["explanatory"] == "plain" for i in range(8))


def test_reasonseg_bad_inputs(copy):
    split_dir = copy / "ReasonSeg" / SPLIT
    with pytest.raises(FileNotFoundError, match="ReasonSeg split folder not found"):
        ReasonSegSource(copy / "ReasonSeg" / "nowhere")
    with pytest.raises(FileNotFoundError, match="explanatory file not found"):
        ReasonSegSource(split_dir, copy / "missing.json")
    explanatory = copy / "ReasonSeg" / "explanatory" / f"{SPLIT}.json"
    items = json.loads(explanatory.read_text())
    explanatory.write_text(json.dumps(items + [{"image": "ghost.jpg", "query": "q", "outputs": "o"}]))
    with pytest.raises(DatasetFormatError, match=rf"\[{len(items)}\] \(image 'ghost.jpg'\): names an image that is not in"):
        ReasonSegSource(split_dir, explanatory)
    image = sorted(split_dir.glob("*.png"))[0]
    image.unlink()
    with pytest.raises(MissingImageError, match=f"image not found: .*{image.name}"):
        ReasonSegSource(split_dir)


# ---- shared behaviour ------------------------------------------------------------------------------------------

def test_samples_are_deterministic_in_the_index(data):
    out, paths = data
    for make in (lambda: semseg(out, seed=SEED), lambda: ReferSegSource(out, "shapeworld", "unc", SPLIT, seed=SEED),
                 lambda: ReasonSegSource(paths["reason_seg"], paths["reason_seg_explanatory"], seed=SEED)):
        a, b = make(), make()
        first, again = a.sample(4), b.sample(4)
        assert first.turns == again.turns and all(np.array_equal(x, y) for x, y in zip(first.masks, again.masks))
        assert len({repr(a.sample(i).turns) for i in range(12)}) > 3  # other indices draw other conversations
        with pytest.raises(IndexError, match="index must be >= 0"):
            a.sample(-1)


def test_templates_load_and_refuse_bad_templates(tmp_path):
    assert len(TEMPLATES.short_questions) == 4 and len(TEMPLATES.long_questions) == 2
    assert len(TEMPLATES.answers) == 5 and len(TEMPLATES.explanatory_suffixes) == 3
    assert TEMPLATES.join(["a", "b", "c"]) == "a, b and c" and TEMPLATES.join(["a"]) == "a"
    good = json.loads(DEFAULT_PATH.read_text())

    def load(change) -> Templates:
        data = json.loads(json.dumps(good))
        change(data)
        path = tmp_path / "templates.json"
        path.write_text(json.dumps(data))
        return Templates.load(path)

    cases = [
        (lambda d: d["short_questions"].append("Segment it."), r"short_questions\[4\]: 'Segment it.' must contain exactly \{object\}; found none"),
        (lambda d: d["answers"].__setitem__(0, "{seg} {why}"), r"answers\[0\]: .* must contain exactly \{seg\}; found \{seg\}, \{why\}"),
        (lambda d: d["long_questions"].__setitem__(1, "{}"), r"long_questions\[1\]: '\{\}' has placeholder"),
        (lambda d: d["long_questions"].__setitem__(1, "{sentence"), r"long_questions\[1\]: .* is not a format pattern"),
        (lambda d: d["short_questions"].__setitem__(0, "<image>\nSegment the {object}."), r"short_questions\[0\]: .*contains <image>"),
        (lambda d: d["answers"].__setitem__(0, "[SEG] {seg}"), r"answers\[0\]: .*writes \[SEG\] literally"),
        (lambda d: d["multi"].pop("answers"), r"missing key 'multi.answers'"),
        (lambda d: d.__setitem__("short_question", []), r"unknown keys \['short_question'\]"),
        (lambda d: d["long_questions"].clear(), r"'long_questions' is an empty list"),
        (lambda d: d["explanatory"].__setitem__("text_only_rate", 1.5), r"explanatory.text_only_rate must be a number in \[0, 1\]"),
    ]
    for change, message in cases:
        with pytest.raises(TemplateError, match=message):
            load(change)
    with pytest.raises(FileNotFoundError, match="templates file not found"):
        Templates.load(tmp_path / "none.json")


def test_cli_writes_semseg(tmp_path):
    result = CliRunner().invoke(app, ["data", "shapeworld", str(tmp_path), "--task", "semseg", "--n", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    label = np.asarray(Image.open(tmp_path / "semseg" / "annotations" / "train" / f"{item_id('train', 0):012d}.png"))
    expected = generate_scene(scene_seed("train", 0, 0))
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0} | {o.category_id for o in expected.objects if o.area}
