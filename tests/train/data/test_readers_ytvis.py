"""read_ytvis: YouTube-VIS json (DATA_FORMATS.md §7), null/empty frames absent, lengths checked."""
from __future__ import annotations

import numpy as np
import pytest

from glee_core.mask_ops import encode_rle
from train.data.readers import DatasetFormatError, MissingImageError, read_ytvis

FRAMES = ["0a1b2c3d4e/00000.jpg", "0a1b2c3d4e/00005.jpg", "0a1b2c3d4e/00010.jpg"]
SMALL = np.zeros((4, 6), dtype=bool)
SMALL[1:3, 2:5] = True


def ytvis_data() -> dict:
    return {
        "videos": [{"id": 5, "width": 1280, "height": 720, "length": 3, "file_names": FRAMES},
                   {"id": 6, "width": 6, "height": 4, "length": 2, "file_names": ["small/00000.jpg", "small/00005.jpg"]}],
        "annotations": [
            {"id": 17, "video_id": 5, "category_id": 8, "iscrowd": 0, "width": 1280, "height": 720, "length": 3,
             "segmentations": [{"size": [720, 1280], "counts": [460800, 20, 700, 20, 460060]}, None,
                               {"size": [720, 1280], "counts": [461000, 40, 460560]}],
             "bboxes": [[640.0, 0.0, 2.0, 20.0], None, [640.0, 200.0, 1.0, 40.0]], "areas": [40.0, None, 40.0]},
            {"id": 18, "video_id": 6, "category_id": 8, "iscrowd": 0, "width": 6, "height": 4, "length": 2,
             "segmentations": [{}, encode_rle(SMALL)], "bboxes": [[], [2, 1, 3, 2]], "areas": [None, 6.0]},
        ],
        "categories": [{"id": 8, "name": "dog", "supercategory": "object"}],
    }


@pytest.fixture
def ytvis(tmp_path, make_image, make_json):
    for name in FRAMES + ["small/00000.jpg", "small/00005.jpg"]:
        make_image(tmp_path / "JPEGImages" / name)
    return lambda data: (make_json(tmp_path / "train.json", data), tmp_path / "JPEGImages")


def test_values(ytvis):
    json_path, root = ytvis(ytvis_data())
    videos, categories = read_ytvis(json_path, root)
    assert categories == {8: "dog"} and [v.video_id for v in videos] == [5, 6]
    video = videos[0]
    assert (video.height, video.width) == (720, 1280) and video.frame_paths == [root / f for f in FRAMES]
    (track,) = video.tracks
    assert (track.ann_id, track.category_id, track.iscrowd) == (17, 8, False)
    np.testing.assert_array_equal(track.boxes[0], [640, 0, 642, 20])
    assert track.boxes[1] is None and track.segmentations[1] is None
    np.testing.assert_array_equal(track.boxes[2], [640, 200, 641, 240])
    # 460800 = 640 columns x 720 rows: the two runs of 20 are rows 0..19 of columns 640 and 641
    first = track.mask(0, 720, 1280)
    assert first.sum() == 40 and first[:20, 640:642].all()
    third = track.mask(2, 720, 1280)
    assert third.sum() == 40 and third[200:240, 640].all()
    assert not track.mask(1, 720, 1280).any()
    small = videos[1].tracks[0]
    assert small.segmentations[0] is None and small.boxes[0] is None  # empty entries = absent
    np.testing.assert_array_equal(small.mask(1, 4, 6), SMALL)


def _with(index, **changes) -> dict:
    data = ytvis_data()
    data["annotations"][index].update(changes)
    return data


@pytest.mark.parametrize("data, problem", [
    (_with(0, bboxes=[[1, 2, 3, 4], None]), r"annotations\[0\] \(id 17\): 'bboxes' has 2 entries, the video's length is 3"),
    (_with(0, segmentations=[None, None]), r"annotations\[0\] \(id 17\): 'segmentations' has 2 entries"),
    (_with(1, areas=[1.0]), r"annotations\[1\] \(id 18\): 'areas' has 1 entries"),
    (_with(0, bboxes=[[1, 2, 3], None, None]), r"annotations\[0\] \(id 17\): 'bboxes'\[0\] must have 4 numbers"),
    (_with(1, segmentations=[None, {"size": [6, 4], "counts": [24]}]), r"annotations\[1\] \(id 18\): 'segmentations'\[1\] RLE size \[6, 4\] does not match"),
    (_with(0, video_id=9), r"annotations\[0\] \(id 17\): video_id 9 is not in 'videos'"),
    (_with(0, category_id=1), r"annotations\[0\] \(id 17\): category_id 1 is not in 'categories'"),
    (_with(0, bboxes=[0, None, None]), r"annotations\[0\] \(id 17\): 'bboxes'\[0\] must be"),  # not "absent"
    (_with(0, segmentations=["", None, None]), r"annotations\[0\] \(id 17\): 'segmentations'\[0\]"),
], ids=["bboxes_length", "segmentations_length", "areas_length", "bbox_three_numbers", "rle_size", "unknown_video",
        "unknown_category", "zero_box", "empty_string_segmentation"])
def test_malformed_annotations(ytvis, data, problem):
    json_path, root = ytvis(data)
    with pytest.raises(DatasetFormatError, match=r"train.json: " + problem):
        read_ytvis(json_path, root)


@pytest.mark.parametrize("key, value, problem", [
    ("length", 4, r"'file_names' has 3 entries, 'length' is 4"),
    ("height", 0, r"image size must be positive, got height 0"),
])
def test_malformed_videos(ytvis, key, value, problem):
    data = ytvis_data()
    data["videos"][0][key] = value
    json_path, root = ytvis(data)
    with pytest.raises(DatasetFormatError, match=r"videos\[0\] \(id 5\): " + problem):
        read_ytvis(json_path, root)


def test_missing_frame(ytvis):
    json_path, root = ytvis(ytvis_data())
    (root / "small" / "00005.jpg").unlink()
    with pytest.raises(MissingImageError, match=r"videos\[1\] \(id 6\): image not found: .*small/00005.jpg"):
        read_ytvis(json_path, root)
    assert len(read_ytvis(json_path, root, check_images=False)[0]) == 2
