"""YouTube-VIS 2019/2021 (and OVIS) json → VideoRecords and categories.

Frames resolve to ``frames_root / file_names[i]``. Per-frame lists (``segmentations``, ``bboxes``, optional
``areas``) must have the video's ``length``; ``null`` and empty entries (``[]``, ``{}``) both mean "absent"
(None), as GLEE's loader treats them. Boxes become float32 xyxy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from train.data.readers._fields import Where, load_json, records
from train.data.readers._instances import (parse_annotation_ids, parse_box, parse_categories, parse_segmentation,
                                           parse_size)
from train.data.records import VideoRecord, VideoTrack


def _per_frame(where: Where, ann: dict, key: str, length: int, parse: Callable[[Any, str], Any], required: bool = True) -> list:
    if not required and key not in ann:
        return [None] * length
    values = where.field(ann, key, list)
    if len(values) != length:
        raise where.error(f"{key!r} has {len(values)} entries, the video's length is {length}")
    return [None if v is None or v == [] or v == {} else parse(v, f"{key!r}[{t}]") for t, v in enumerate(values)]


def read_ytvis(
    json_path: str | Path, frames_root: str | Path, *, check_images: bool = True
) -> tuple[list[VideoRecord], dict[int, str]]:
    """Read videos (file order, each with its tracks in file order) and categories ``id -> name``."""
    json_path = Path(json_path)
    frames_root = Path(frames_root)
    top = Where(json_path, "top level")
    data = top.check(load_json(json_path), dict, "the file content")
    categories, _ = parse_categories(top, data)

    videos: dict[int, VideoRecord] = {}
    for where, video in records(top, data, "videos"):
        video_id = where.field(video, "id", int)
        if video_id in videos:
            raise where.error(f"duplicate video id {video_id}")
        height, width = parse_size(where, video)
        length = where.field(video, "length", int)
        file_names = where.items(video, "file_names", str)
        if len(file_names) != length:
            raise where.error(f"'file_names' has {len(file_names)} entries, 'length' is {length}")
        frame_paths = [frames_root / name for name in file_names]
        if check_images:
            for path in frame_paths:
                where.require_image(path)
        videos[video_id] = VideoRecord(video_id, frame_paths, height, width, [])

    ann_ids: set[int] = set()
    for where, ann in records(top, data, "annotations"):
        ann_id, video_id, category_id = parse_annotation_ids(where, ann, ann_ids, videos, "video_id", categories)
        video = videos[video_id]
        length = len(video.frame_paths)
        segmentations = _per_frame(
            where, ann, "segmentations", length, lambda v, name: parse_segmentation(v, where, video.height, video.width, name)
        )
        boxes = _per_frame(where, ann, "bboxes", length, lambda v, name: parse_box(v, where, name))
        _per_frame(where, ann, "areas", length, lambda v, name: where.check(v, float, name), required=False)
        video.tracks.append(VideoTrack(ann_id, category_id, segmentations, boxes, where.field(ann, "iscrowd", bool, False)))
    return list(videos.values()), categories
