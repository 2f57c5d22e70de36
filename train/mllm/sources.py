"""The four LISA training sources, each read from its official format and served as a ``SampleSource``.

* ``SemSegSource``   — ADE20K-layout semantic segmentation (image + class-index label PNG of the same stem):
  up to ``max_classes`` classes present in the label, a short question per class, mask = ``label == class``.
* ``ReferSegSource`` — RefCOCO/+/g, RefCLEF (refer layout): one image, up to ``max_sentences`` sentences drawn
  from all refs on it, a short question per sentence, mask = the referred annotation.
* ``VqaSource``      — LLaVA conversations: the dialogue as is, ``<image>`` removed, no masks.
* ``ReasonSegSource`` — ReasonSeg: up to ``max_sentences`` rephrasings of the query (long template for
  sentences, short for phrases), all sharing the one mask; LISA's explanatory answers when an explanatory
  json is given.

Every target becomes its own turn with one ``[SEG]`` (LISA: one ``[SEG]`` per question) unless
``packing="joined"``: then one question names all targets and its answer holds one ``[SEG]`` per target, in
order. A sample's randomness comes from ``default_rng([seed, crc32(name), index])``; index ``i`` serves record
``i % len``. Problems with the files are raised at construction, naming the file (missing folders or
annotation files, images referenced but absent, label PNGs whose size differs from their image).
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from glee_core.image_io import load_image
from train.data.errors import DatasetFormatError, MissingImageError
from train.data.readers import read_explanatory, read_llava, read_reasonseg, read_refer
from train.data.readers.reasonseg import IMAGE_SUFFIXES
from train.data.records import ReferringRecord
from train.mllm.samples import MllmSample
from train.mllm.templates import IMAGE_TOKEN, Templates

PACKINGS = ("turns", "joined")
T = TypeVar("T")


def _check_index(index: int, name: str) -> None:
    if index < 0:
        raise IndexError(f"{name}: sample index must be >= 0, got {index}")


def sample_rng(seed: int, name: str, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of the source called ``name``."""
    _check_index(index, name)
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), index])


def _record(records: list[T], index: int, name: str) -> T:
    _check_index(index, name)
    if not records:
        raise IndexError(f"source {name!r} has no records to sample")
    return records[index % len(records)]


def _check_packing(packing: str) -> str:
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {PACKINGS}, got {packing!r}")
    return packing


def _check_count(value: int, what: str) -> int:
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return value


def _turns(templates: Templates, rng: np.random.Generator, targets: list[str], packing: str) -> list[tuple[str, str]]:
    """One short-question turn per target, or (``joined``, several targets) one turn naming them all."""
    if packing == "joined" and len(targets) > 1:
        return [templates.multi_turn(rng, targets)]
    return [(templates.question(rng, text), templates.answer(rng)) for text in targets]


def _size_mismatch(file: Path, record: str, size: tuple[int, int], other: Path,
                   other_size: tuple[int, int]) -> DatasetFormatError:
    """Sizes as (height, width)."""
    return DatasetFormatError(
        file, record, f"size {size[1]}x{size[0]} (WxH) differs from {other} ({other_size[1]}x{other_size[0]})")


def ade20k_classes(names: list[str]) -> dict[int, str]:
    """ADE20K (and the shapeworld ``semseg`` task): label value ``i + 1`` is ``names[i]``; 0 ("other") is not a
    class, so it is never asked (LISA maps it to 255)."""
    return {i + 1: name for i, name in enumerate(names)}


def cocostuff_classes(names: list[str]) -> dict[int, str]:
    """COCO-Stuff (``stuffthingmaps``): label value ``v`` is ``names[v]`` (``names`` = LISA's
    ``cocostuff_classes.txt`` without its first "unlabeled" line, so 0 = person); 255 (unlabeled) and, as in
    LISA, the hyphenated stuff names (``wall-brick``, ``ceiling-other``, ...) are not classes."""
    return {v: name for v, name in enumerate(names) if "-" not in name}


def read_class_names(path: str | Path) -> list[str]:
    """One class name per non-empty line; an ``"<index>: "`` prefix (LISA's class files) is dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class names file not found: {path}")
    return [line.split(": ")[-1].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _label_png(path: Path) -> np.ndarray:
    """Class indices [H, W] of a label PNG (8- or 16-bit grey or palette)."""
    with Image.open(path) as image:
        label = np.asarray(image)
    if label.ndim != 2:
        raise DatasetFormatError(path, f"label {path.stem}",
                                 f"must be a single-channel class-index PNG, got shape {label.shape}")
    return label


class SemSegSource:
    """ADE20K-layout semantic segmentation: ``images_dir/<stem>.<jpg|png>`` + ``labels_dir/<stem>.png``.

    ``class_names`` maps label values to names (see ``ade20k_classes`` / ``cocostuff_classes``); values it
    does not map (ADE's 0, the 255 ignore label) are never asked about. A label without any mapped class is
    skipped for the next record. ``check_sizes`` compares every pair's PNG / JPEG header sizes at construction.
    """

    def __init__(self, images_dir: str | Path, labels_dir: str | Path, class_names: Mapping[int, str], *,
                 max_classes: int = 3, packing: str = "turns", check_sizes: bool = True,
                 templates: Templates | None = None, seed: int = 0, name: str = "sem_seg"):
        self.images_dir, self.labels_dir = Path(images_dir), Path(labels_dir)
        for folder, what in ((self.images_dir, "images"), (self.labels_dir, "labels")):
            if not folder.is_dir():
                raise FileNotFoundError(f"semantic-segmentation {what} folder not found: {folder}")
        if not class_names:
            raise ValueError("class_names is empty: map at least one label value to a class name")
        for value, class_name in class_names.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (isinstance(class_name, str)
                                                                                          and class_name):
                raise ValueError(f"class_names must map int label values to non-empty names, "
                                 f"got {value!r}: {class_name!r}")
        self.class_names = {int(v): n for v, n in class_names.items()}
        self.max_classes = _check_count(max_classes, "max_classes")
        self.packing = _check_packing(packing)
        self.templates = templates or Templates.load()
        self.seed, self.name = seed, name
        self.pairs = self._pairs(check_sizes)

    def _pairs(self, check_sizes: bool) -> list[tuple[Path, Path]]:
        images = {p.stem: p for p in sorted(self.images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        labels = {p.stem: p for p in sorted(self.labels_dir.glob("*.png"))}
        for stem, image in images.items():
            if stem not in labels:
                raise DatasetFormatError(image, f"image {stem}", f"no label {self.labels_dir / (stem + '.png')}")
        for stem, label in labels.items():
            if stem not in images:
                raise MissingImageError(f"label {stem}", self.images_dir / f"{stem}.jpg", label,
                                        also_tried=tuple(self.images_dir / f"{stem}{s}" for s in IMAGE_SUFFIXES[1:]))
        pairs = [(images[stem], labels[stem]) for stem in sorted(images)]
        if check_sizes:
            for image, label in pairs:
                with Image.open(image) as a, Image.open(label) as b:
                    if a.size != b.size:
                        raise _size_mismatch(label, f"label {label.stem}", b.size[::-1], image, a.size[::-1])
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def _classes(self, index: int) -> tuple[Path, Path, np.ndarray, list[int]]:
        """The first record from ``index`` on whose label holds a mapped class: paths, label, its classes."""
        for step in range(len(self.pairs)):
            image_path, label_path = _record(self.pairs, index + step, self.name)
            label = _label_png(label_path)
            present = [int(v) for v in np.unique(label) if int(v) in self.class_names]
            if present:
                return image_path, label_path, label, present
        raise ValueError(f"{self.labels_dir}: no label holds any class of class_names "
                         f"(values {sorted(self.class_names)[:10]}...)")

    def sample(self, index: int) -> MllmSample:
        rng = sample_rng(self.seed, self.name, index)
        image_path, label_path, label, present = self._classes(index)
        image = load_image(image_path)
        if image.shape[:2] != label.shape:
            raise _size_mismatch(label_path, f"label {label_path.stem}", label.shape, image_path, image.shape[:2])
        values = [present[i] for i in rng.choice(len(present), min(self.max_classes, len(present)), replace=False)]
        names = [self.class_names[v] for v in values]
        return MllmSample(image, _turns(self.templates, rng, names, self.packing), [label == v for v in values],
                          self.name, {"image": str(image_path), "label": str(label_path), "classes": names,
                                      "label_values": values})


class ReferSegSource:
    """Referring segmentation in the refer layout (``read_refer``): one sample per image, up to
    ``max_sentences`` sentences drawn without replacement from every sentence of every ref on it."""

    def __init__(self, data_root: str | Path, dataset: str = "refcoco", split_by: str = "unc", split: str = "train",
                 image_root: str | Path | None = None, *, max_sentences: int = 3, packing: str = "turns",
                 templates: Templates | None = None, seed: int = 0, name: str = "refer_seg"):
        self.instances_path = Path(data_root) / dataset / "instances.json"
        refs_path = Path(data_root) / dataset / f"refs({split_by}).p"
        for path in (self.instances_path, refs_path):
            if not path.is_file():
                raise FileNotFoundError(f"refer annotation file not found: {path}")
        by_image: dict[int, list[ReferringRecord]] = {}
        for record in read_refer(data_root, dataset, split_by, split, image_root):
            by_image.setdefault(record.image.image_id, []).append(record)
        self.images = list(by_image.values())
        self.max_sentences = _check_count(max_sentences, "max_sentences")
        self.packing = _check_packing(packing)
        self.templates = templates or Templates.load()
        self.seed, self.name = seed, name

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int) -> MllmSample:
        rng = sample_rng(self.seed, self.name, index)
        refs = _record(self.images, index, self.name)
        info = refs[0].image
        image = load_image(info.path)
        if image.shape[:2] != (info.height, info.width):
            raise _size_mismatch(self.instances_path, f"image_id {info.image_id}", (info.height, info.width),
                                 info.path, image.shape[:2])
        pool = [(ref, sentence) for ref in refs for sentence in ref.sentences]
        picked = [pool[i] for i in rng.choice(len(pool), min(self.max_sentences, len(pool)), replace=False)]
        masks = [ref.image.instances[0].mask(info.height, info.width) for ref, _ in picked]
        sentences = [sentence for _, sentence in picked]
        return MllmSample(image, _turns(self.templates, rng, sentences, self.packing), masks, self.name,
                          {"image": str(info.path), "image_id": info.image_id,
                           "ref_ids": [ref.ref_id for ref, _ in picked], "sentences": sentences})


class VqaSource:
    """LLaVA conversations (``read_llava``) with their images; every item needs an image (LISA's
    ``llava_instruct_150k``; filter text-only items of the mix665k files out first)."""

    def __init__(self, json_path: str | Path, image_root: str | Path, *, name: str = "vqa"):
        json_path = Path(json_path)
        if not json_path.is_file():
            raise FileNotFoundError(f"LLaVA conversation file not found: {json_path}")
        self.conversations = read_llava(json_path, image_root)
        for conversation in self.conversations:
            if conversation.image is None:
                raise DatasetFormatError(json_path, f"id {conversation.id}",
                                         "has no 'image'; VqaSource needs one per conversation")
            if len(conversation.turns) % 2:
                raise DatasetFormatError(json_path, f"id {conversation.id}",
                                         "ends with a human turn; every question needs a gpt answer")
        self.name = name

    def __len__(self) -> int:
        return len(self.conversations)

    def sample(self, index: int) -> MllmSample:
        conversation = _record(self.conversations, index, self.name)
        texts = [text for _, text in conversation.turns]
        texts[0] = texts[0].replace(IMAGE_TOKEN, "").strip()
        turns = list(zip(texts[0::2], texts[1::2]))
        return MllmSample(load_image(conversation.image), turns, [], self.name,
                          {"id": conversation.id, "image": str(conversation.image)})


class ReasonSegSource:
    """ReasonSeg split folder (``read_reasonseg``), optionally with LISA's explanatory json: for an image it
    lists, one draw per sample decides text-only (query → explanation, no mask; ``text_only_rate``), an
    explained ``[SEG]`` answer (``explain_rate`` of the rest) or a plain one, shared by all its rephrasings.
    Masks are the target pixels (value 1); the ignore region (255) is ``meta["ignore"]`` (bool [H, W])."""

    def __init__(self, split_dir: str | Path, explanatory_json: str | Path | None = None, *, max_sentences: int = 3,
                 templates: Templates | None = None, seed: int = 0, name: str = "reason_seg"):
        self.records = read_reasonseg(split_dir)
        self.explanations: dict[str, str] = {}
        if explanatory_json is not None:
            explanatory_json = Path(explanatory_json)
            if not explanatory_json.is_file():
                raise FileNotFoundError(f"ReasonSeg explanatory file not found: {explanatory_json}")
            names = {record.image_path.name for record in self.records}
            for i, item in enumerate(read_explanatory(explanatory_json)):
                if item.image not in names:
                    raise DatasetFormatError(explanatory_json, f"[{i}] (image {item.image!r})",
                                             f"names an image that is not in {Path(split_dir)}")
                self.explanations[item.image] = item.outputs
        self.max_sentences = _check_count(max_sentences, "max_sentences")
        self.templates = templates or Templates.load()
        self.seed, self.name = seed, name

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int) -> MllmSample:
        rng = sample_rng(self.seed, self.name, index)
        record = _record(self.records, index, self.name)
        image = load_image(record.image_path)
        label = record.mask(*image.shape[:2])
        count = min(self.max_sentences, len(record.texts))
        texts = [record.texts[i] for i in rng.choice(len(record.texts), count, replace=False)]
        explanation = self.explanations.get(record.image_path.name)
        mode = "plain"
        if explanation is not None:
            if rng.random() < self.templates.text_only_rate:
                mode = "text_only"
            elif rng.random() < self.templates.explain_rate:
                mode = "explained"
        t = self.templates
        if mode == "text_only":
            turns = [t.text_only_turn(text, explanation) for text in texts]
        elif mode == "explained":
            turns = [t.explained_turn(rng, text, explanation) for text in texts]
        else:
            turns = [(t.question(rng, text, record.is_sentence), t.answer(rng)) for text in texts]
        masks = [] if mode == "text_only" else [label == 1 for _ in texts]
        return MllmSample(image, turns, masks, self.name,
                          {"image": str(record.image_path), "annotation": str(record.json_path), "texts": texts,
                           "explanatory": mode, "ignore": label == 255})
