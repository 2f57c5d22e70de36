"""RefCOCO / RefCOCO+ / RefCOCOg / RefCLEF (lichengunc/refer layout) → ReferringRecords.

Reads ``<data_root>/<dataset>/refs(<split_by>).p`` (with the restricted unpickler) and
``<data_root>/<dataset>/instances.json``. The image file name comes from ``instances.json`` (a ref's own
``file_name`` carries a fake ann-id suffix). Images default to ``<data_root>/images/mscoco/images/train2014``
(``images/saiapr_tc-12`` for refclef, ``images/shapeworld`` for shapeworld). Split selection follows the REFER API's ``getRefIds``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from train.data.readers._fields import Where
from train.data.readers.coco import read_coco
from train.data.readers.safe_pickle import load_pickle_safely
from train.data.records import Instance, ReferringRecord

_IMAGE_DIRS = {"refclef": Path("images/saiapr_tc-12"), "shapeworld": Path("images/shapeworld")}
_COCO_IMAGES = Path("images/mscoco/images/train2014")


def split_matches(ref_split: str, split: str | None) -> bool:
    """REFER's rule: ``testA``/``testB``/``testC`` keep splits containing that letter, ``test`` any split
    containing "test", ``testAB``/``testBC``/``testAC``, ``train`` and ``val`` exact matches; None keeps all."""
    if split is None:
        return True
    if split in ("testA", "testB", "testC"):
        return split[-1] in ref_split
    if split == "test":
        return "test" in ref_split
    if split in ("testAB", "testBC", "testAC", "train", "val"):
        return ref_split == split
    raise ValueError(f"unknown refer split {split!r}; use train, val, test, testA, testB, testC, testAB, testBC or testAC")


def _sentences(where: Where, ref: dict) -> tuple[list[str], list[int]]:
    sentences = where.items(ref, "sentences", dict)
    if not sentences:
        raise where.error("'sentences' is empty")
    texts = [where.field(s, "sent", str) for s in sentences]
    sent_ids = [where.field(s, "sent_id", int) for s in sentences]
    return texts, sent_ids


def read_refer(
    data_root: str | Path,
    dataset: str = "refcoco",
    split_by: str = "unc",
    split: str | None = None,
    image_root: str | Path | None = None,
    *,
    check_images: bool = True,
) -> list[ReferringRecord]:
    """Read the refs of one dataset/split_by, keeping those of ``split`` (see ``split_matches``), in file order.

    Each record's ``image.instances`` is ``[the referred instance]``. Raises DatasetFormatError for malformed
    files or refs pointing at unknown annotations, MissingImageError for a selected ref's missing image.
    """
    split_matches("train", split)  # validate the split name before reading anything
    data_root = Path(data_root)
    folder = data_root / dataset
    image_root = Path(image_root) if image_root is not None else data_root / _IMAGE_DIRS.get(dataset, _COCO_IMAGES)
    instances = read_coco(folder / "instances.json", image_root, check_images=False)
    images = {image.image_id: image for image in instances.images}
    anns: dict[int, tuple[Instance, int]] = {
        inst.ann_id: (inst, image.image_id) for image in instances.images for inst in image.instances
    }

    refs_path = folder / f"refs({split_by}).p"
    top = Where(refs_path, "top level")
    refs = top.check(load_pickle_safely(refs_path), list, "the pickle content")
    out: list[ReferringRecord] = []
    checked: set[int] = set()
    for index, ref in enumerate(refs):
        where = top.at(f"refs[{index}]" + (f" (ref_id {ref['ref_id']!r})" if isinstance(ref, dict) and "ref_id" in ref else ""))
        where.check(ref, dict, "ref")
        ref_split = where.field(ref, "split", str)
        if not split_matches(ref_split, split):
            continue
        ann_id = where.field(ref, "ann_id", int)
        image_id = where.field(ref, "image_id", int)
        category_id = where.field(ref, "category_id", int)
        if ann_id not in anns:
            raise where.error(f"ann_id {ann_id} is not in {folder / 'instances.json'}")
        instance, ann_image_id = anns[ann_id]
        if ann_image_id != image_id:
            raise where.error(f"ann_id {ann_id} belongs to image_id {ann_image_id}, not {image_id}")
        image = images[image_id]
        if instance.category_id != category_id:
            raise where.error(f"category_id {category_id} differs from its annotation's {instance.category_id}")
        if check_images and image_id not in checked:
            where.require_image(image.path)
            checked.add(image_id)
        texts, sent_ids = _sentences(where, ref)
        out.append(ReferringRecord(
            ref_id=where.field(ref, "ref_id", int),
            image=dataclasses.replace(image, instances=[instance], extra=dict(image.extra)),
            sentences=texts,
            split=ref_split,
            category_id=category_id,
            sent_ids=sent_ids,
        ))
    return out
