"""read_reasonseg / read_explanatory: LISA's json keys, mask rules (largest first, ignore = 255), cp1252 files."""
from __future__ import annotations

import numpy as np
import pytest

from train.data.readers import DatasetFormatError, MissingImageError, read_explanatory, read_reasonseg
from train.data.records import ReasonSegRecord

EXAMPLE = {
    "text": ["Which item would a diver strap on to breathe underwater?", "the thing that supplies air to a diver"],
    "is_sentence": True,
    "imagePath": "8330290136_0a1b2c3d4e_o.jpg",
    "shapes": [{"label": "target", "points": [[311.2, 140.0], [402.7, 151.3], [395.0, 288.6], [305.4, 270.1]]},
               {"label": "ignore", "points": [[330.0, 300.0], [360.0, 300.0], [350.0, 330.0]]}],
}


def rect(x1, y1, x2, y2):
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


def record(*shapes) -> ReasonSegRecord:
    return ReasonSegRecord(None, None, ["q"], False, [(label, np.asarray(points, dtype=float)) for label, points in shapes])


@pytest.fixture
def split_dir(tmp_path, make_image, make_json):
    folder = tmp_path / "ReasonSeg" / "train"
    make_image(folder / "8330290136_0a1b2c3d4e_o.jpg")
    make_json(folder / "8330290136_0a1b2c3d4e_o.json", EXAMPLE)
    make_image(folder / "scene0123_00_4.png")
    make_json(folder / "scene0123_00_4.json", {"text": ["the café chair"], "is_sentence": False, "shapes": []}, encoding="cp1252")
    return folder


def test_values_and_cp1252(split_dir):
    diver, scene = read_reasonseg(split_dir)
    assert diver.image_path == split_dir / "8330290136_0a1b2c3d4e_o.jpg"
    assert diver.json_path == split_dir / "8330290136_0a1b2c3d4e_o.json"
    assert diver.texts == EXAMPLE["text"] and diver.is_sentence is True
    assert [label for label, _ in diver.shapes] == ["target", "ignore"]
    np.testing.assert_array_equal(diver.shapes[1][1], [[330.0, 300.0], [360.0, 300.0], [350.0, 330.0]])
    assert scene.image_path.suffix == ".png" and scene.texts == ["the café chair"] and scene.is_sentence is False
    assert not scene.mask(5, 5).any()
    mask = diver.mask(480, 640)
    assert set(np.unique(mask)) == {0, 1, 255} and mask[200, 350] == 1 and mask[310, 350] == 255


def test_mask_smaller_ignore_overwrites_target():
    # target covers cols 2..6 x rows 1..5 (outline included, as cv2.polylines + fillPoly), ignore cols 4..8 x rows 3..6
    mask = record(("target", rect(2, 1, 6, 5)), ("ignore", rect(4, 3, 8, 6))).mask(8, 10)
    expected = np.zeros((8, 10), dtype=np.uint8)
    expected[1:6, 2:7] = 1
    expected[3:7, 4:9] = 255
    np.testing.assert_array_equal(mask, expected)


def test_mask_largest_first_regardless_of_file_order():
    # a large ignore region listed after a small target is drawn first, so the target stays 1
    mask = record(("person", rect(3, 2, 4.9, 3.7)), ("Ignore_region", rect(0, 0, 9, 7)), ("flag", rect(0, 0, 2, 2))).mask(8, 10)
    expected = np.full((8, 10), 255, dtype=np.uint8)
    expected[2:4, 3:5] = 1  # points truncated to int: (3, 2)-(4, 3)
    np.testing.assert_array_equal(mask, expected)


def test_explanatory(tmp_path, make_json):
    path = make_json(tmp_path / "explanatory" / "train.json",
                     [{"image": "8330290136_0a1b2c3d4e_o.jpg", "query": "what supplies air?", "outputs": "The tank, since divers breathe from it."}])
    (item,) = read_explanatory(path)
    assert (item.image, item.query, item.outputs) == ("8330290136_0a1b2c3d4e_o.jpg", "what supplies air?", "The tank, since divers breathe from it.")
    make_json(path, [{"image": "a.jpg", "query": "q"}])
    with pytest.raises(DatasetFormatError, match=r"train.json: \[0\]: missing key 'outputs'"):
        read_explanatory(path)


def test_missing_image(split_dir):
    (split_dir / "scene0123_00_4.png").unlink()
    with pytest.raises(MissingImageError, match=r"image scene0123_00_4: image not found: .*scene0123_00_4.jpg \(also tried"):
        read_reasonseg(split_dir)


def test_upper_case_image_suffix(split_dir):
    (split_dir / "scene0123_00_4.png").rename(split_dir / "scene0123_00_4.PNG")
    assert read_reasonseg(split_dir)[1].image_path == split_dir / "scene0123_00_4.PNG"


def test_image_without_json(split_dir, make_image):
    make_image(split_dir / "lonely.jpg")
    with pytest.raises(DatasetFormatError, match=r"lonely.jpg: image lonely: no annotation lonely.json beside it"):
        read_reasonseg(split_dir)


@pytest.mark.parametrize("change, problem", [
    ({"text": "a string"}, r"'text' must be list"),
    ({"text": []}, r"'text' is empty"),
    ({"is_sentence": "yes"}, r"'is_sentence' must be bool"),
    ({"shapes": [{"label": "target", "points": [[1, 2, 3]]}]}, r"shapes\[0\] \(label 'target'\): 'points'\[0\] must be \[x, y\]"),
    ({"shapes": [{"points": [[1, 2]]}]}, r"shapes\[0\]: missing key 'label'"),
], ids=["text_not_list", "text_empty", "is_sentence_type", "bad_point", "missing_label"])
def test_malformed_json(split_dir, make_json, change, problem):
    make_json(split_dir / "8330290136_0a1b2c3d4e_o.json", {**EXAMPLE, **change})
    with pytest.raises(DatasetFormatError, match=r"8330290136_0a1b2c3d4e_o.json: .*" + problem):
        read_reasonseg(split_dir)


def test_missing_key_and_bad_json(split_dir, make_json):
    make_json(split_dir / "scene0123_00_4.json", {"text": ["x"], "shapes": []})
    with pytest.raises(DatasetFormatError, match=r"scene0123_00_4.json: image scene0123_00_4: missing key 'is_sentence'"):
        read_reasonseg(split_dir)
    (split_dir / "scene0123_00_4.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match=r"scene0123_00_4.json: file: invalid JSON"):
        read_reasonseg(split_dir)
