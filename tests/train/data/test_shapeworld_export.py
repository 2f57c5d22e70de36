"""write_shapeworld round trips: each task written with n=3, read back with the official-format readers and
compared with the generator's own objects; determinism; the ``gleekit data shapeworld`` command."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from glee_core.mask_ops import mask_iou
from train.cli import app
from train.data.readers import read_coco, read_explanatory, read_llava, read_reasonseg, read_refer, read_ytvis
from train.data.shapeworld.export import item_id, task_rng, write_shapeworld
from train.data.shapeworld.reasoning import reasoning_queries
from train.data.shapeworld.referring import referring_expressions
from train.data.shapeworld.scene import generate_scene, scene_seed
from train.data.shapeworld.video import generate_video
from train.data.shapeworld.vocab import CATEGORY_NAMES

N, SEED = 3, 7
PLURALS = {name + ("es" if name.endswith("s") else "s"): name for name in CATEGORY_NAMES}


def scene(split: str, index: int):
    return generate_scene(scene_seed(split, index, SEED), split=split)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("shapeworld")


def test_detection_round_trip(out):
    path = write_shapeworld(out, "detection", "val", N, SEED, progress=False)
    dataset = read_coco(path, out / "val")
    assert dataset.category_names() == CATEGORY_NAMES and list(dataset.categories) == list(range(1, 9))
    assert [image.image_id for image in dataset.images] == [item_id("val", i) for i in range(N)]
    for index, image in enumerate(dataset.images):
        expected = scene("val", index)
        np.testing.assert_array_equal(np.asarray(Image.open(image.path)), expected.image)  # lossless PNG
        assert len(image.instances) == len(expected.objects)
        for instance, obj in zip(image.instances, expected.objects):
            np.testing.assert_array_equal(instance.box, obj.box)
            assert instance.category_id == obj.category_id and instance.area == obj.area and not instance.iscrowd
            np.testing.assert_array_equal(instance.mask(image.height, image.width), obj.mask)


def test_referring_round_trip_keeps_other_splits(out):
    write_shapeworld(out, "referring", "train", 2, SEED, progress=False)
    write_shapeworld(out, "referring", "test", N, SEED, progress=False)
    records = read_refer(out, "shapeworld", split="test")
    assert {r.split for r in records} == {"test"}
    assert {r.split for r in read_refer(out, "shapeworld")} == {"train", "test"}  # writing test kept train
    checked = 0
    for index in range(N):
        expected = scene("test", index)
        expressions = referring_expressions(expected, task_rng("referring", expected.seed), max_per_object=3)
        mine = [r for r in records if r.image.image_id == item_id("test", index)]
        assert len(mine) == len({e.target for e in expressions})
        for record in mine:
            (instance,) = record.image.instances
            target = instance.ann_id - item_id("test", index) * 1000 - 1
            obj = expected.objects[target]
            assert record.sentences == [e.text.lower() for e in expressions if e.target == target]
            assert record.category_id == obj.category_id
            np.testing.assert_array_equal(instance.box, obj.box)
            np.testing.assert_array_equal(instance.mask(record.image.height, record.image.width), obj.mask)
            checked += 1
    assert checked >= N


def test_reasoning_round_trip(out):
    folder = write_shapeworld(out, "reasoning", "val", N, SEED, progress=False)
    records = read_reasonseg(folder)
    assert records
    explanations = {e.image: e for e in read_explanatory(out / "ReasonSeg" / "explanatory" / "val.json")}
    for record in records:
        index = int(record.image_path.stem.split("_")[0]) - item_id("val", 0)
        expected = scene("val", index)
        queries = {q.text: q for q in reasoning_queries(expected, task_rng("reasoning", expected.seed))}
        (text,) = record.texts
        query = queries[text]
        assert record.is_sentence == query.is_sentence
        truth = np.logical_or.reduce([expected.objects[t].mask for t in query.targets])
        mask = record.mask(*truth.shape)
        assert set(np.unique(mask)) <= {0, 1}
        assert mask_iou((mask == 1)[None], truth[None])[0, 0] >= 0.97
        if query.explanation:
            assert explanations[record.image_path.name].outputs == query.explanation
        else:
            assert record.image_path.name not in explanations


def _check_answer(question: str, answer: str, objects, height: int, width: int) -> None:
    """Recompute every kind of answer from the scene's objects."""
    word = re.match(r"There (?:is|are) (\w+)", answer)
    value = {"no": 0, "one": 1}[word[1]] if word and word[1] in ("no", "one") else int(word[1]) if word else None
    if question == "How many shapes are in the image?":
        assert value == len(objects), (question, answer)
    elif m := re.match(r"How many (\w+) are there\?", question):
        shape = PLURALS[m[1]]
        assert value == sum(o.shape == shape for o in objects), (question, answer)
    elif m := re.match(r"How many (\w+) shapes can you see\?", question):
        assert value == sum(o.color == m[1] for o in objects), (question, answer)
    elif m := re.match(r"What colour is the (\w+)\?", question):
        (obj,) = [o for o in objects if o.shape == m[1]]
        assert answer == f"The {m[1]} is {obj.color}."
    else:
        m = re.match(r"Where is the (\w+) (\w+)\?", question)
        (obj,) = [o for o in objects if (o.color, o.shape) == (m[1], m[2])]
        cx, cy = (obj.box[0] + obj.box[2]) / 2, (obj.box[1] + obj.box[3]) / 2
        assert ("left" in answer) == (cx < width / 3) and ("right" in answer) == (cx >= 2 * width / 3)
        assert ("top" in answer) == (cy < height / 3) and ("bottom" in answer) == (cy >= 2 * height / 3)


def test_conversation_round_trip(out):
    path = write_shapeworld(out, "conversation", "train", N, SEED, progress=False)
    conversations = read_llava(path, out / "train")
    assert [c.id for c in conversations] == [f"{item_id('train', i):012d}" for i in range(N)]
    for index, conversation in enumerate(conversations):
        expected = scene("train", index)
        assert conversation.image == out / "train" / f"{item_id('train', index):012d}.png"
        assert conversation.turns[0][1].startswith("<image>\n") and len(conversation.turns) == 6
        height, width = expected.image.shape[:2]
        for (_, question), (_, answer) in zip(conversation.turns[::2], conversation.turns[1::2]):
            _check_answer(question.removeprefix("<image>\n"), answer, expected.objects, height, width)


def test_video_round_trip(out):
    path = write_shapeworld(out, "video", "test", 2, SEED, progress=False)
    videos, categories = read_ytvis(path, out / "test" / "JPEGImages")
    assert list(categories.values()) == CATEGORY_NAMES
    assert any(box is None for record in videos for track in record.tracks for box in track.boxes)  # absences exercised
    for index, record in enumerate(videos):
        video = generate_video(scene_seed("test", index, SEED), split="test")
        assert len(record.frame_paths) == len(video.frames)
        np.testing.assert_array_equal(np.asarray(Image.open(record.frame_paths[-1])), video.frames[-1].image)
        track_ids = sorted({t for frame in video.frames for t in frame.track_ids})
        assert len(record.tracks) == len(track_ids)
        for track, track_id in zip(record.tracks, track_ids):
            for t, frame in enumerate(video.frames):
                objs = [o for o, i in zip(frame.objects, frame.track_ids) if i == track_id and o.area > 0]
                if not objs:
                    assert track.boxes[t] is None and track.segmentations[t] is None
                    continue
                assert track.category_id == objs[0].category_id
                np.testing.assert_array_equal(track.boxes[t], objs[0].box)
                np.testing.assert_array_equal(track.mask(t, record.height, record.width), objs[0].mask)


def test_deterministic_bytes(tmp_path):
    for task in ("detection", "reasoning"):
        first = write_shapeworld(tmp_path / "a", task, "val", 2, 3, progress=False)
        second = write_shapeworld(tmp_path / "b", task, "val", 2, 3, progress=False)
        files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
        for rel in files:
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
        assert first.relative_to(tmp_path / "a") == second.relative_to(tmp_path / "b")
    other = write_shapeworld(tmp_path / "c", "detection", "val", 2, 4, progress=False)
    assert other.read_bytes() != (tmp_path / "a" / "annotations" / "instances_val.json").read_bytes()


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "segmentation"}, "task must be one of"),
    ({"split": "dev"}, "split must be one of"),
    ({"n": 0}, "n must be >= 1"),
    ({"seed": -1}, "seed must be >= 0"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    args = {"task": "detection", "split": "train", "n": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        write_shapeworld(tmp_path, progress=False, **args)


def test_cli(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "shapeworld", str(tmp_path), "--task", "detection", "--split", "val",
                                 "--n", "2", "--seed", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "annotations" / "instances_val.json"
    assert result.output.strip() == f"wrote 2 val scenes of shapeworld detection (seed 1) to {path}"
    assert len(read_coco(path, tmp_path / "val").images) == 2
    bad = runner.invoke(app, ["data", "shapeworld", str(tmp_path), "--task", "segmentation"])
    assert bad.exit_code == 2 and "segmentation" in bad.output
