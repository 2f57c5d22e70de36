"""read_lvis: coco_url paths, LVIS extras, no iscrowd (DATA_FORMATS.md §2)."""
from __future__ import annotations

import numpy as np
import pytest

from train.data.readers import DatasetFormatError, MissingImageError, read_lvis


def lvis_data() -> dict:
    return {
        "images": [
            {"id": 4711, "coco_url": "http://images.cocodataset.org/val2017/000000004711.jpg", "width": 640, "height": 480,
             "neg_category_ids": [12, 845], "not_exhaustive_category_ids": [3]},
            {"id": 123456, "coco_url": "http://images.cocodataset.org/train2017/000000123456.jpg", "width": 20, "height": 10,
             "neg_category_ids": [], "not_exhaustive_category_ids": []},
        ],
        "annotations": [
            {"id": 1, "image_id": 4711, "category_id": 3, "bbox": [10, 20, 30, 40], "area": 1200.0,
             "segmentation": [[10, 20, 40, 20, 40, 60, 10, 60]]},
        ],
        "categories": [{"id": 3, "name": "armchair", "synonyms": ["armchair"], "synset": "armchair.n.01",
                        "def": "chair with arm rests", "frequency": "f", "image_count": 900, "instance_count": 1500}],
    }


@pytest.fixture
def lvis(tmp_path, make_image, make_json):
    make_image(tmp_path / "coco" / "val2017" / "000000004711.jpg")
    make_image(tmp_path / "coco" / "train2017" / "000000123456.jpg")
    return lambda data: (make_json(tmp_path / "lvis_v1_val.json", data), tmp_path / "coco")


def test_values(lvis):
    dataset = read_lvis(*lvis(lvis_data()))
    first, second = dataset.images
    assert first.path.parts[-2:] == ("val2017", "000000004711.jpg")
    assert second.path.parts[-2:] == ("train2017", "000000123456.jpg")  # val images live partly in train2017
    assert first.extra == {"neg_category_ids": [12, 845], "not_exhaustive_category_ids": [3]}
    (armchair,) = first.instances
    np.testing.assert_array_equal(armchair.box, [10, 20, 40, 60])
    assert armchair.iscrowd is False and armchair.mask(480, 640).sum() == 30 * 40
    assert dataset.categories == {3: "armchair"} and dataset.category_info[3]["frequency"] == "f"


def test_file_name_fallback(lvis, tmp_path, make_image):
    data = lvis_data()
    del data["images"][1]["coco_url"]
    data["images"][1]["file_name"] = "COCO_val2014_000000123456.jpg"
    make_image(tmp_path / "coco" / "COCO_val2014_000000123456.jpg")
    assert read_lvis(*lvis(data)).images[1].path.name == "COCO_val2014_000000123456.jpg"


def test_missing_extra_key(lvis):
    data = lvis_data()
    del data["images"][0]["neg_category_ids"]
    with pytest.raises(DatasetFormatError, match=r"images\[0\] \(id 4711\): missing key 'neg_category_ids'"):
        read_lvis(*lvis(data))


def test_missing_url_and_file_name(lvis):
    data = lvis_data()
    del data["images"][1]["coco_url"]
    with pytest.raises(DatasetFormatError, match=r"images\[1\] \(id 123456\): missing key 'coco_url' \(or 'file_name'\)"):
        read_lvis(*lvis(data))


def test_missing_image(lvis, tmp_path):
    (tmp_path / "coco" / "train2017" / "000000123456.jpg").unlink()
    with pytest.raises(MissingImageError, match=r"images\[1\] \(id 123456\): image not found: .*train2017/000000123456.jpg"):
        read_lvis(*lvis(lvis_data()))
