"""Write shapeworld in the official dataset formats (DATA_FORMATS.md), so the official-format readers serve it.

Layouts under ``out_dir`` (images are lossless PNG; image ids never collide across splits:
``image_id = SPLITS.index(split) * ID_STRIDE + index + 1``):

* ``detection``    → ``annotations/instances_<split>.json`` + ``<split>/<12-digit id>.png`` (COCO). Segmentations are
  compressed RLE with ``iscrowd`` 0: polygons cannot represent the exact (possibly occluded) masks; COCO's
  format expects polygons for non-crowd objects, but pycocotools (and ``read_coco``) decode RLE for either.
  ``area`` = mask pixels, ``bbox`` = the mask's box.
* ``referring``    → ``shapeworld/{instances.json, refs(unc).p}`` + ``images/shapeworld/<12-digit id>.png`` (refer
  layout; read with ``read_refer(out_dir, "shapeworld")``). One ref per object with expressions; every split lives
  in the same two files, so writing a split replaces that split's records and keeps the others.
* ``reasoning``    → ``ReasonSeg/<split>/<stem>.png + <stem>.json`` and ``ReasonSeg/explanatory/<split>.json``
  (stem ``<12-digit id>_<q>``, one file pair per query, at most ``MAX_QUERIES_PER_SCENE`` per scene). Target
  polygons trace each mask component's boundary pixel centres; LISA's rule (outline + fill) redraws them exactly,
  except for holes, which a LabelMe polygon cannot express.
* ``conversation`` → ``llava_<split>.json`` (LLaVA) + ``<split>/<12-digit id>.png``: questions on counts, colours
  and positions answered from the scene.
* ``video``        → ``<split>/instances.json`` + ``<split>/JPEGImages/<video>/<5-digit frame>.png`` (YouTube-VIS 2021
  layout; segmentations are uncompressed RLE as in the official ground truth, ``null`` where a track is absent).
* ``mot``          → ``<split>/shapeworld-<split>-<6-digit index>/{seqinfo.ini, img1/000001.png ..., gt/gt.txt}``
  (MOTChallenge, :mod:`train.data.mot_format`): every visible object with conf 1, class 1 (pedestrian) and
  visibility 1; its id is the video's track id + 1 (MOTChallenge ids start at 1); nominal frame rate 10.
* ``semseg``       → ``semseg/images/<split>/<12-digit id>.png`` + ``semseg/annotations/<split>/<id>.png`` +
  ``semseg/classes.txt`` (ADE20K layout): uint8 class-index labels, 0 = background ("other", ignored as in
  ADE20K), k = the k-th line of ``classes.txt`` (CATEGORY_NAMES order, so k = the COCO category id).

Everything is deterministic: same arguments → byte-identical json and PNG files.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from glee_core.mask_ops import encode_rle
from mllm.tokens import IMAGE_TOKEN
from train.data.masks import mask_to_polygons, uncompressed_rle
from train.data.mot_format import SeqInfo, write_gt, write_seqinfo
from train.data.readers.safe_pickle import load_pickle_safely
from train.data.shapeworld.reasoning import reasoning_queries
from train.data.shapeworld.referring import referring_expressions
from train.data.shapeworld.scene import SPLITS, Scene, SceneObject, generate_scene, object_boxes, scene_seed
from train.data.shapeworld.video import generate_video
from train.data.shapeworld.vocab import CATEGORY_NAMES, plural

TASKS = ("detection", "referring", "reasoning", "conversation", "video", "mot", "semseg")
ID_STRIDE = 10**9  # image / video ids of split s are s * ID_STRIDE + 1 ...
OBJECT_STRIDE = 1000  # annotation id = image_id * OBJECT_STRIDE + object index + 1
MAX_QUERIES_PER_SCENE = 4
MOT_FRAME_RATE = 10  # nominal: shapeworld frames have no time base
QUESTIONS_PER_CONVERSATION = 3
_SALT = {task: i for i, task in enumerate(TASKS)}  # per-task rng stream on top of the scene seed


def item_id(split: str, index: int) -> int:
    """Image / video id of item ``index`` of ``split`` (unique across splits)."""
    return SPLITS.index(split) * ID_STRIDE + index + 1


def _split_of(image_id: int) -> str:
    return SPLITS[(image_id - 1) // ID_STRIDE]


def task_rng(task: str, scene_seed_value: int) -> np.random.Generator:
    """The random stream a task's writer uses for the scene with generator seed ``scene_seed_value``."""
    return np.random.default_rng([scene_seed_value, _SALT[task]])


def _save_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _categories() -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORY_NAMES)]


def _objects(scene: Scene) -> list[tuple[int, SceneObject]]:
    """(index, object) of the objects with at least one visible pixel."""
    return [(i, obj) for i, obj in enumerate(scene.objects) if obj.area > 0]


def _coco_image(image_id: int, file_name: str, scene: Scene) -> dict:
    height, width = scene.image.shape[:2]
    return {"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)}


def _coco_annotations(image_id: int, scene: Scene) -> list[dict]:
    if len(scene.objects) >= OBJECT_STRIDE:
        raise ValueError(f"a scene has {len(scene.objects)} objects; at most {OBJECT_STRIDE - 1} fit the id scheme")
    return [
        {"id": image_id * OBJECT_STRIDE + i + 1, "image_id": image_id, "category_id": obj.category_id, "iscrowd": 0,
         "area": float(obj.area), "bbox": _xywh(obj.box), "segmentation": encode_rle(obj.mask)}
        for i, obj in _objects(scene)
    ]


def _scenes(split: str, n: int, seed: int, bar: tqdm) -> Iterator[tuple[int, int, Scene]]:
    """(index, image id, scene) for scenes 0..n-1 of split, advancing the progress bar."""
    for index in range(n):
        yield index, item_id(split, index), generate_scene(scene_seed(split, index, seed), split=split)
        bar.update(1)


def _write_detection(out: Path, split: str, n: int, seed: int, bar: tqdm) -> Path:
    images, annotations = [], []
    for _, image_id, scene in _scenes(split, n, seed, bar):
        file_name = f"{image_id:012d}.png"
        _save_png(scene.image, out / split / file_name)
        images.append(_coco_image(image_id, file_name, scene))
        annotations += _coco_annotations(image_id, scene)
    path = out / "annotations" / f"instances_{split}.json"
    _write_json(path, {"info": {"description": f"shapeworld detection {split}, seed {seed}"}, "licenses": [],
                       "images": images, "annotations": annotations, "categories": _categories()})
    return path


def _ref(image_id: int, file_name: str, index: int, obj: SceneObject, texts: list[str], split: str) -> dict:
    ann_id = image_id * OBJECT_STRIDE + index + 1
    sent_ids = [ann_id * 10 + j for j in range(len(texts))]
    return {
        "ref_id": ann_id, "ann_id": ann_id, "image_id": image_id, "category_id": obj.category_id, "split": split,
        "sent_ids": sent_ids, "file_name": f"{Path(file_name).stem}_{ann_id}.png",
        "sentences": [{"sent_id": sid, "sent": text.lower(), "raw": text, "tokens": text.lower().split()}
                      for sid, text in zip(sent_ids, texts)],
    }


def _write_referring(out: Path, split: str, n: int, seed: int, bar: tqdm) -> Path:
    images, annotations, refs = [], [], []
    for _, image_id, scene in _scenes(split, n, seed, bar):
        file_name = f"{image_id:012d}.png"
        _save_png(scene.image, out / "images" / "shapeworld" / file_name)
        images.append(_coco_image(image_id, file_name, scene))
        annotations += _coco_annotations(image_id, scene)
        expressions = referring_expressions(scene, task_rng("referring", scene.seed), max_per_object=3)
        for index, obj in _objects(scene):
            texts = [e.text for e in expressions if e.target == index]
            if texts:
                refs.append(_ref(image_id, file_name, index, obj, texts, split))
    folder = out / "shapeworld"
    instances_path, refs_path = folder / "instances.json", folder / "refs(unc).p"
    if instances_path.exists() and refs_path.exists():  # keep the other splits
        old = json.loads(instances_path.read_text(encoding="utf-8"))
        images += [i for i in old["images"] if _split_of(i["id"]) != split]
        annotations += [a for a in old["annotations"] if _split_of(a["image_id"]) != split]
        refs += [r for r in load_pickle_safely(refs_path) if r["split"] != split]
    images.sort(key=lambda i: i["id"])
    annotations.sort(key=lambda a: a["id"])
    refs.sort(key=lambda r: r["ref_id"])
    _write_json(instances_path, {"info": {"description": f"shapeworld referring, seed {seed}"}, "licenses": [],
                                 "images": images, "annotations": annotations, "categories": _categories()})
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    return folder


def _write_reasoning(out: Path, split: str, n: int, seed: int, bar: tqdm) -> Path:
    folder = out / "ReasonSeg" / split
    explanations = []
    for _, image_id, scene in _scenes(split, n, seed, bar):
        rng = task_rng("reasoning", scene.seed)
        queries = reasoning_queries(scene, rng)
        if len(queries) > MAX_QUERIES_PER_SCENE:
            keep = np.sort(rng.choice(len(queries), MAX_QUERIES_PER_SCENE, replace=False))
            queries = [queries[i] for i in keep]
        for q, query in enumerate(queries):
            stem = f"{image_id:012d}_{q}"
            shapes = [{"label": "target", "points": polygon.tolist(), "group_id": None, "shape_type": "polygon", "flags": {}}
                      for target in query.targets for polygon in mask_to_polygons(scene.objects[target].mask)]
            height, width = scene.image.shape[:2]
            _save_png(scene.image, folder / f"{stem}.png")
            _write_json(folder / f"{stem}.json", {"text": [query.text], "is_sentence": bool(query.is_sentence),
                                                  "shapes": shapes, "imagePath": f"{stem}.png",
                                                  "imageHeight": int(height), "imageWidth": int(width)})
            if query.explanation:
                explanations.append({"image": f"{stem}.png", "query": query.text, "outputs": query.explanation})
    _write_json(out / "ReasonSeg" / "explanatory" / f"{split}.json", explanations)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _count_answer(count: int, noun: str) -> str:
    if count == 0:
        return f"There are no {plural(noun)}."
    return f"There is one {noun}." if count == 1 else f"There are {count} {plural(noun)}."


def _region(obj: SceneObject, height: int, width: int) -> str:
    """"top left", "bottom", "center", ... from the box centre in a 3 x 3 grid."""
    x1, y1, x2, y2 = obj.box
    row = ("top", "", "bottom")[min(int((y1 + y2) / 2 / height * 3), 2)]
    col = ("left", "", "right")[min(int((x1 + x2) / 2 / width * 3), 2)]
    return " ".join(word for word in (row, col) if word) or "center"


def _questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Every question the scene can answer unambiguously, as (question, answer)."""
    objects = [obj for _, obj in _objects(scene)]
    height, width = scene.image.shape[:2]
    shapes = [obj.shape for obj in objects]
    colors = [obj.color for obj in objects]
    asked_shape = str(rng.choice(CATEGORY_NAMES))
    asked_color = colors[int(rng.integers(len(colors)))]
    out = [
        ("How many shapes are in the image?", _count_answer(len(objects), "shape")),
        (f"How many {plural(asked_shape)} are there?", _count_answer(shapes.count(asked_shape), asked_shape)),
        (f"How many {asked_color} shapes can you see?", _count_answer(colors.count(asked_color), f"{asked_color} shape")),
    ]
    for obj in objects:
        if shapes.count(obj.shape) == 1:
            out.append((f"What colour is the {obj.shape}?", f"The {obj.shape} is {obj.color}."))
        if sum(o.shape == obj.shape and o.color == obj.color for o in objects) == 1:
            region = _region(obj, height, width)
            where = "in the center" if region == "center" else f"in the {region} part"
            out.append((f"Where is the {obj.color} {obj.shape}?", f"The {obj.color} {obj.shape} is {where} of the image."))
    return out


def _conversation(image_id: int, file_name: str, scene: Scene) -> dict:
    rng = task_rng("conversation", scene.seed)
    pool = _questions(scene, rng)
    picked = [pool[i] for i in rng.choice(len(pool), min(QUESTIONS_PER_CONVERSATION, len(pool)), replace=False)]
    turns = []
    for k, (question, answer) in enumerate(picked):
        if k == 0:
            question = f"{IMAGE_TOKEN}\n{question}" if rng.random() < 0.5 else f"{question}\n{IMAGE_TOKEN}"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": f"{image_id:012d}", "image": file_name, "conversations": turns}


def _write_conversation(out: Path, split: str, n: int, seed: int, bar: tqdm) -> Path:
    items = []
    for _, image_id, scene in _scenes(split, n, seed, bar):
        file_name = f"{image_id:012d}.png"
        _save_png(scene.image, out / split / file_name)
        items.append(_conversation(image_id, file_name, scene))
    path = out / f"llava_{split}.json"
    _write_json(path, items)
    return path


def _write_video(out: Path, split: str, n: int, seed: int, bar: tqdm) -> Path:
    folder = out / split
    videos, annotations = [], []
    for index in range(n):
        video_id = item_id(split, index)
        video = generate_video(scene_seed(split, index, seed), split=split)
        name = f"{video_id:012d}"
        height, width = video.frames[0].image.shape[:2]
        file_names = [f"{name}/{t:05d}.png" for t in range(len(video.frames))]
        for file_name, frame in zip(file_names, video.frames):
            _save_png(frame.image, folder / "JPEGImages" / file_name)
        videos.append({"id": video_id, "width": int(width), "height": int(height), "length": len(file_names),
                       "file_names": file_names})
        track_ids = sorted({int(t) for frame in video.frames for t in frame.track_ids})
        if len(track_ids) >= OBJECT_STRIDE:
            raise ValueError(f"a video has {len(track_ids)} tracks; at most {OBJECT_STRIDE - 1} fit the id scheme")
        for k, track_id in enumerate(track_ids):
            per_frame = []
            for frame in video.frames:
                found = [obj for obj, t in zip(frame.objects, frame.track_ids) if int(t) == track_id and obj.area > 0]
                per_frame.append(found[0] if found else None)
            category_id = next(obj.category_id for obj in per_frame if obj is not None)
            annotations.append({
                "id": video_id * OBJECT_STRIDE + k + 1, "video_id": video_id, "category_id": category_id, "iscrowd": 0,
                "width": int(width), "height": int(height), "length": len(file_names),
                "segmentations": [uncompressed_rle(obj.mask) if obj is not None else None for obj in per_frame],
                "bboxes": [_xywh(obj.box) if obj is not None else None for obj in per_frame],
                "areas": [float(obj.area) if obj is not None else None for obj in per_frame],
            })
        bar.update(1)
    path = folder / "instances.json"
    _write_json(path, {"info": {"description": f"shapeworld video {split}, seed {seed}"}, "licenses": [],
                       "videos": videos, "annotations": annotations, "categories": _categories()})
    return path


def _write_mot(out: Path, split: str, n: int, seed: int, bar: tqdm) -> Path:
    folder = out / split
    for index in range(n):
        video = generate_video(scene_seed(split, index, seed), split=split)
        height, width = video.frames[0].image.shape[:2]
        name = f"shapeworld-{split}-{index:06d}"
        info = SeqInfo(folder / name, name, "img1", MOT_FRAME_RATE, len(video.frames), width, height, ".png")
        for t, frame in enumerate(video.frames, start=1):
            _save_png(frame.image, info.frame_path(t))
        write_gt(info.gt_path, [np.asarray(frame.track_ids, np.int64) + 1 for frame in video.frames],
                 [object_boxes(frame.objects) for frame in video.frames])
        write_seqinfo(info)
        bar.update(1)
    return folder


def class_label(scene: Scene) -> np.ndarray:
    """uint8 [H, W]: 0 background, else the category id of the object visible at the pixel."""
    label = np.zeros(scene.image.shape[:2], np.uint8)
    for _, obj in _objects(scene):
        label[obj.mask] = obj.category_id
    return label


def _write_semseg(out: Path, split: str, n: int, seed: int, bar: tqdm) -> Path:
    folder = out / "semseg"
    for _, image_id, scene in _scenes(split, n, seed, bar):
        file_name = f"{image_id:012d}.png"
        _save_png(scene.image, folder / "images" / split / file_name)
        _save_png(class_label(scene), folder / "annotations" / split / file_name)
    (folder / "classes.txt").write_text("".join(name + "\n" for name in CATEGORY_NAMES), encoding="utf-8")
    return folder


_WRITERS: dict[str, Callable[[Path, str, int, int, tqdm], Path]] = {
    "detection": _write_detection,
    "referring": _write_referring,
    "reasoning": _write_reasoning,
    "conversation": _write_conversation,
    "video": _write_video,
    "mot": _write_mot,
    "semseg": _write_semseg,
}


def write_shapeworld(out_dir: str | Path, task: str, split: str, n: int, seed: int = 0, *, progress: bool = True) -> Path:
    """Generate ``n`` scenes (videos) of ``split`` for dataset ``seed`` and write ``task``'s official format under
    ``out_dir`` (layouts in the module docstring). Returns the main annotation file (folder for referring /
    reasoning / semseg)."""
    if task not in _WRITERS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir)
    with tqdm(total=n, desc=f"shapeworld {task} {split}", unit="video" if task in ("video", "mot") else "scene",
              disable=not progress) as bar:
        return _WRITERS[task](out, split, n, seed, bar)
