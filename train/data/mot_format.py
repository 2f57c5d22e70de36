"""Read and write the MOTChallenge (MOT16/17/20) layout.

``<root>/<split>/<SEQ>/seqinfo.ini`` ([Sequence] name, imDir, frameRate, seqLength, imWidth, imHeight, imExt),
``<SEQ>/<imDir>/000001<imExt> ...`` (frames numbered from 1, 6 digits) and ``<SEQ>/gt/gt.txt`` with one line
``frame,id,x,y,w,h,conf,class,visibility`` per object (boxes in pixels, x, y the top-left corner; conf 0 marks
a box to ignore; class 1 is pedestrian). Results are one ``<SEQ>.txt`` per sequence with lines
``frame,id,x,y,w,h,score,-1,-1,-1``.
"""
from __future__ import annotations

import configparser
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glee_core.structures import Tracks

LAYOUT = "MOTChallenge layout is <root>/<split>/<SEQ>/{seqinfo.ini,img1/,gt/gt.txt}"
MIN_COLUMNS = 7  # frame, id, x, y, w, h, conf/score
PEDESTRIAN = 1


@dataclass
class SeqInfo:
    """One sequence's ``seqinfo.ini``: ``length`` frames of ``width`` x ``height`` pixels, ``path`` its folder."""

    path: Path
    name: str
    im_dir: str
    frame_rate: float
    length: int
    width: int
    height: int
    im_ext: str

    @property
    def gt_path(self) -> Path:
        return self.path / "gt" / "gt.txt"

    def frame_path(self, t: int) -> Path:
        """Frame ``t`` (from 1): ``<path>/<imDir>/<6-digit t><imExt>``."""
        return self.path / self.im_dir / f"{t:06d}{self.im_ext}"

    def frame_paths(self) -> list[Path]:
        """The ``length`` frame files in order; raises if one is missing."""
        paths = [self.frame_path(t) for t in range(1, self.length + 1)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{self.path.name}: {len(missing)} of {self.length} frames (seqLength) not found, "
                                    f"first {missing[0]}; frames are <SEQ>/<imDir>/000001<imExt> ...")
        return paths


def read_seqinfo(seq_dir: str | Path) -> SeqInfo:
    """Parse ``<seq_dir>/seqinfo.ini``."""
    seq_dir = Path(seq_dir)
    path = seq_dir / "seqinfo.ini"
    if not path.is_file():
        raise FileNotFoundError(f"{seq_dir.name}/seqinfo.ini not found in {seq_dir.parent}; {LAYOUT}")
    parser = configparser.ConfigParser()
    parser.read(path)
    if "Sequence" not in parser:
        raise ValueError(f"{path}: no [Sequence] section")
    section = parser["Sequence"]
    keys = ("name", "imDir", "frameRate", "seqLength", "imWidth", "imHeight", "imExt")
    missing = [key for key in keys if key not in section]
    if missing:
        raise ValueError(f"{path}: [Sequence] lacks {', '.join(missing)} (needs {', '.join(keys)})")
    try:
        return SeqInfo(seq_dir, section["name"], section["imDir"], float(section["frameRate"]),
                       int(section["seqLength"]), int(section["imWidth"]), int(section["imHeight"]), section["imExt"])
    except ValueError as error:
        raise ValueError(f"{path}: frameRate, seqLength, imWidth and imHeight must be numbers ({error})") from None


def write_seqinfo(info: SeqInfo) -> Path:
    """Write ``info`` as ``<info.path>/seqinfo.ini``."""
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keep the official camelCase keys
    parser["Sequence"] = {"name": info.name, "imDir": info.im_dir, "frameRate": f"{info.frame_rate:g}",
                          "seqLength": str(info.length), "imWidth": str(info.width), "imHeight": str(info.height),
                          "imExt": info.im_ext}
    path = info.path / "seqinfo.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        parser.write(handle, space_around_delimiters=False)
    return path


def list_sequences(split_dir: str | Path) -> list[Path]:
    """The sequence folders of ``<root>/<split>`` (sorted by name); each must hold a ``seqinfo.ini``."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder {split_dir} not found; {LAYOUT}")
    sequences = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sequences:
        raise FileNotFoundError(f"no sequence folders in {split_dir}; {LAYOUT}")
    for seq in sequences:
        if not (seq / "seqinfo.ini").is_file():
            raise FileNotFoundError(f"{seq.name}/seqinfo.ini not found in {split_dir}; {LAYOUT}")
    return sequences


def read_mot_txt(path: str | Path) -> np.ndarray:
    """The lines of a gt or results file as float64 [N, C] (C >= 7 columns, the same on every line; an empty
    file gives [0, 7]). Raises naming the file and line for a short, non-numeric or impossible line
    (frame < 1 or not whole, id not whole, negative width or height)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = [float(value) for value in line.split(",")]
                if not all(map(math.isfinite, row)):
                    raise ValueError
            except ValueError:
                raise ValueError(f"{where}: not comma-separated finite numbers: {line.strip()!r}") from None
            if len(row) < MIN_COLUMNS:
                raise ValueError(f"{where}: {len(row)} columns, need at least {MIN_COLUMNS} "
                                 f"(frame,id,x,y,w,h,conf...): {line.strip()!r}")
            if rows and len(row) != len(rows[0]):
                raise ValueError(f"{where}: {len(row)} columns, the file's first line has {len(rows[0])}")
            frame, track, _, _, width, height = row[:6]
            if frame < 1 or not frame.is_integer() or not track.is_integer():
                raise ValueError(f"{where}: frame must be a whole number >= 1 and id whole, got {line.strip()!r}")
            if width < 0 or height < 0:
                raise ValueError(f"{where}: negative box width or height: {line.strip()!r}")
            rows.append(row)
    return np.array(rows, np.float64) if rows else np.zeros((0, MIN_COLUMNS))


def write_gt(path: str | Path, ids: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
             classes: Sequence[np.ndarray] | None = None) -> Path:
    """Write ``gt.txt``: frame ``t`` (track ``ids[t]`` [N], ``boxes[t]`` [N, 4] xyxy pixels) is MOT frame ``t + 1``,
    boxes become x,y,w,h; conf 1 and visibility 1 for every object, class ``classes[t][i]`` (default 1, pedestrian)."""
    if len(ids) != len(boxes):
        raise ValueError(f"{len(ids)} frames of ids but {len(boxes)} frames of boxes")
    path = Path(path)
    lines = []
    for t, (frame_ids, frame_boxes) in enumerate(zip(ids, boxes)):
        frame_ids, frame_boxes = np.asarray(frame_ids).reshape(-1), np.asarray(frame_boxes).reshape(-1, 4)
        if len(frame_ids) != len(frame_boxes):
            raise ValueError(f"frame {t}: {len(frame_ids)} ids but {len(frame_boxes)} boxes")
        labels = np.full(len(frame_ids), PEDESTRIAN) if classes is None else np.asarray(classes[t])
        if len(labels) != len(frame_ids):
            raise ValueError(f"frame {t}: {len(frame_ids)} objects but {len(labels)} classes")
        for track, (x1, y1, x2, y2), label in zip(frame_ids.tolist(), frame_boxes.tolist(), labels.tolist()):
            lines.append(f"{t + 1},{track},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,{label},1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_results(tracks: Tracks | str, path: str | Path) -> Path:
    """Write a results file: ``tracks`` or their MOT text (``Tracks.to_mot()``, frames from 1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tracks.to_mot() if isinstance(tracks, Tracks) else tracks)
    return path
