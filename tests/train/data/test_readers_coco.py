"""read_coco: official COCO instances schema (DATA_FORMATS.md §1), values and one test per error case."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from glee_core.mask_ops import encode_rle
from train.data.readers import DatasetFormatError, MissingImageError, read_coco

# pycocotools rasterises the integer rectangle (2,1)-(6,5) to columns 2..5, rows 1..4 (pixel-edge convention)
RECT_POLYGON = [2.0, 1.0, 6.0, 1.0, 6.0, 5.0, 2.0, 5.0]
RECT_MASK = np.zeros((8, 10), dtype=bool)
RECT_MASK[1:5, 2:6] = True
# uncompressed RLE of a 4x3 (h x w) mask: 5 zeros, 3 ones, 4 zeros, column-major -> column 1, rows 1..3
CROWD_RLE = {"size": [4, 3], "counts": [5, 3, 4]}
CROWD_MASK = np.array([[0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=bool)
COMPRESSED_MASK = np.eye(8, 10, dtype=bool)


def coco_data() -> dict:
    return {
        "info": {}, "licenses": [],
        "images": [
            {"id": 4711, "file_name": "000000004711.jpg", "width": 640, "height": 480},
            {"id": 4712, "file_name": "000000004712.jpg", "width": 10, "height": 8},
            {"id": 4713, "file_name": "000000004713.jpg", "width": 3, "height": 4},
        ],
        "annotations": [
            {"id": 9001, "image_id": 4711, "category_id": 62, "iscrowd": 0, "area": 7200.0,
             "bbox": [120.0, 200.5, 80.0, 90.0], "segmentation": [[120.0, 200.5, 200.0, 200.5, 200.0, 290.5, 120.0, 290.5]]},
            {"id": 9002, "image_id": 4712, "category_id": 1, "iscrowd": 0, "area": 16.0,
             "bbox": [2, 1, 4, 4], "segmentation": [RECT_POLYGON]},
            {"id": 9003, "image_id": 4713, "category_id": 1, "iscrowd": 1, "area": 3.0,
             "bbox": [1, 1, 1, 3], "segmentation": CROWD_RLE},
            {"id": 9004, "image_id": 4712, "category_id": 62, "iscrowd": 0, "area": 8.0,
             "bbox": [0, 0, 8, 8], "segmentation": encode_rle(COMPRESSED_MASK)},
        ],
        "categories": [{"id": 62, "name": "chair", "supercategory": "furniture"},
                       {"id": 1, "name": "person", "supercategory": "person"}],
    }


@pytest.fixture
def coco(tmp_path, make_image, make_json):
    def write(data: dict | None = None, images: bool = True):
        data = coco_data() if data is None else data
        if images:
            for image in coco_data()["images"]:
                make_image(tmp_path / "val2017" / image["file_name"])
        return make_json(tmp_path / "annotations" / "instances_val2017.json", data), tmp_path / "val2017"
    return write


def test_values(coco):
    dataset = read_coco(*coco())
    assert dataset.categories == {62: "chair", 1: "person"}
    assert dataset.category_names() == ["chair", "person"]
    assert dataset.contiguous_ids() == {62: 0, 1: 1} and dataset.category_ids() == [62, 1]
    assert dataset.category_info[62] == {"supercategory": "furniture"}
    assert [image.image_id for image in dataset.images] == [4711, 4712, 4713]
    first = dataset.images[0]
    assert (first.height, first.width) == (480, 640) and first.path.name == "000000004711.jpg"
    (chair,) = first.instances
    np.testing.assert_array_equal(chair.box, np.array([120.0, 200.5, 200.0, 290.5], dtype=np.float32))
    assert chair.box.dtype == np.float32
    assert (chair.category_id, chair.ann_id, chair.iscrowd, chair.area) == (62, 9001, False, 7200.0)
    # the 80 x 90 polygon with half-pixel y edges covers 80 columns x 90 rows
    assert chair.mask(480, 640).sum() == 80 * 90


def test_polygon_and_rle_masks(coco):
    dataset = read_coco(*coco())
    rect, diagonal = dataset.images[1].instances
    np.testing.assert_array_equal(rect.box, [2, 1, 6, 5])
    np.testing.assert_array_equal(rect.mask(8, 10), RECT_MASK)
    np.testing.assert_array_equal(diagonal.mask(8, 10), COMPRESSED_MASK)
    (crowd,) = dataset.images[2].instances
    assert crowd.iscrowd is True and crowd.segmentation == CROWD_RLE
    np.testing.assert_array_equal(crowd.mask(4, 3), CROWD_MASK)


def test_optional_keys_default(coco):
    data = coco_data()
    for ann in data["annotations"]:
        del ann["iscrowd"], ann["area"], ann["segmentation"]
    instance = read_coco(*coco(data)).images[0].instances[0]
    assert (instance.iscrowd, instance.area, instance.segmentation) == (False, None, None)
    assert not instance.mask(480, 640).any()


def _set(path, value):
    def mutate(data):
        *parents, last = path
        target = data
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return mutate


ERROR_CASES = {
    "missing_key": (_set(("annotations", 1, "bbox"), KeyError), "annotations[1] (id 9002)", "missing key 'bbox'"),
    "wrong_type": (_set(("annotations", 0, "category_id"), "62"), "annotations[0] (id 9001)", "'category_id' must be int"),
    "bbox_three_numbers": (_set(("annotations", 0, "bbox"), [1, 2, 3]), "annotations[0]", "must have 4 numbers"),
    "negative_bbox": (_set(("annotations", 0, "bbox"), [1, 2, -3, 4]), "annotations[0]", "negative width or height"),
    "odd_polygon": (_set(("annotations", 1, "segmentation"), [[1, 2, 3, 4, 5, 6, 7]]), "annotations[1] (id 9002)", "even number"),
    "two_point_polygon": (_set(("annotations", 1, "segmentation"), [[1, 2, 3, 4]]), "annotations[1]", "even number (>= 6)"),
    "rle_wrong_size": (_set(("annotations", 2, "segmentation"), {"size": [3, 4], "counts": [12]}), "annotations[2] (id 9003)",
                       "does not match the image size [4, 3]"),
    "rle_counts_short": (_set(("annotations", 2, "segmentation"), {"size": [4, 3], "counts": [5, 3]}), "annotations[2]",
                         "cover 8 pixels, the image has 12"),
    "unknown_image_id": (_set(("annotations", 0, "image_id"), 5), "annotations[0] (id 9001)", "image_id 5 is not in 'images'"),
    "unknown_category": (_set(("annotations", 0, "category_id"), 3), "annotations[0]", "category_id 3 is not in 'categories'"),
    "duplicate_ann_id": (_set(("annotations", 1, "id"), 9001), "annotations[1] (id 9001)", "duplicate annotation id 9001"),
    "duplicate_image_id": (_set(("images", 1, "id"), 4711), "images[1] (id 4711)", "duplicate image id 4711"),
    "images_not_list": (_set(("images",), {}), "top level", "'images' must be list"),
    "bool_as_int": (_set(("images", 0, "width"), True), "images[0] (id 4711)", "'width' must be int"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_malformed_file_names_file_and_record(coco, case):
    mutate, record, problem = ERROR_CASES[case]
    data = copy.deepcopy(coco_data())
    mutate(data)
    json_path, root = coco(data)
    with pytest.raises(DatasetFormatError) as info:
        read_coco(json_path, root)
    message = str(info.value)
    assert str(json_path) in message and record in message and problem in message, message


def test_invalid_json(coco):
    json_path, root = coco()
    json_path.write_text('{"images": [')
    with pytest.raises(DatasetFormatError, match="invalid JSON"):
        read_coco(json_path, root)


def test_missing_image_is_reported(coco):
    json_path, root = coco()
    (root / "000000004712.jpg").unlink()
    with pytest.raises(MissingImageError) as info:
        read_coco(json_path, root)
    assert "images[1] (id 4712)" in str(info.value) and str(root / "000000004712.jpg") in str(info.value)
    assert len(read_coco(json_path, root, check_images=False).images) == 3
