"""Readers of the official dataset formats (COCO, LVIS, refer, ReasonSeg, LLaVA, YouTube-VIS).

Every reader raises ``DatasetFormatError`` for a malformed file (naming the file and the record) and
``MissingImageError`` for an image that is not on disk.
"""
from train.data.errors import DatasetFormatError, MissingImageError
from train.data.readers.coco import read_coco
from train.data.readers.llava import read_llava
from train.data.readers.lvis import read_lvis
from train.data.readers.reasonseg import read_explanatory, read_reasonseg, read_reasonseg_json
from train.data.readers.refer import read_refer, split_matches
from train.data.readers.safe_pickle import load_pickle_safely
from train.data.readers.ytvis import read_ytvis

__all__ = [
    "DatasetFormatError",
    "MissingImageError",
    "load_pickle_safely",
    "read_coco",
    "read_explanatory",
    "read_llava",
    "read_lvis",
    "read_reasonseg",
    "read_reasonseg_json",
    "read_refer",
    "read_ytvis",
    "split_matches",
]
