"""Checked access to parsed JSON: every type error names the file and the record.

``Where(file, record)`` is the location of one record (``"annotations[3] (id 9001)"``); its ``field`` and
``check`` methods return the value or raise ``DatasetFormatError`` naming the file, the record and the field.
Kinds: ``int`` (not bool), ``float`` (int or float, finite, not bool), ``bool`` (true/false or 0/1), ``str``,
``list``, ``dict``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.data.errors import DatasetFormatError, MissingImageError

_MISSING = object()


def _matches(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool) or (type(value) is int and value in (0, 1))
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


@dataclass(frozen=True)
class Where:
    """The location of one record: an annotation file and a readable record label."""

    file: Path
    record: str

    def error(self, problem: str) -> DatasetFormatError:
        return DatasetFormatError(self.file, self.record, problem)

    def at(self, record: str) -> Where:
        return Where(self.file, record)

    def check(self, value: Any, kind: type, name: str) -> Any:
        """``value`` if it is of ``kind`` (converted for bool/float), else a DatasetFormatError."""
        if not _matches(value, kind):
            raise self.error(f"{name} must be {kind.__name__}, got {type(value).__name__} {_short(value)}")
        return kind(value) if kind in (bool, float) else value

    def field(self, obj: dict, key: str, kind: type, default: Any = _MISSING) -> Any:
        """``obj[key]`` checked against ``kind``; a missing key is an error unless ``default`` is given."""
        if key not in obj:
            if default is _MISSING:
                raise self.error(f"missing key {key!r}")
            return default
        return self.check(obj[key], kind, repr(key))

    def items(self, obj: dict, key: str, kind: type) -> list:
        """``obj[key]``, a list whose every item is of ``kind``."""
        values = self.field(obj, key, list)
        return [self.check(v, kind, f"{key!r}[{i}]") for i, v in enumerate(values)]

    def require_image(self, path: Path) -> Path:
        """``path`` if it is a file, else MissingImageError naming this record."""
        if not path.is_file():
            raise MissingImageError(self.record, path, self.file)
        return path


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_json(path: str | Path, encodings: tuple[str, ...] = ("utf-8",)) -> Any:
    """Parse a JSON file, trying ``encodings`` in order; invalid JSON → DatasetFormatError naming the file."""
    path = Path(path)
    raw = path.read_bytes()
    for encoding in encodings:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            last = exc
            continue
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, "file", f"invalid JSON: {exc}") from None
    raise DatasetFormatError(path, "file", f"cannot decode as {' or '.join(encodings)}: {last}")


def records(where: Where, data: Any, key: str, id_key: str | None = "id") -> list[tuple[Where, dict]]:
    """``data[key]`` as ``(Where, dict)`` pairs labelled ``"key[i] (id_key X)"``."""
    values = where.field(data, key, list)
    out = []
    for index, item in enumerate(values):
        label = f"{key}[{index}]"
        if isinstance(item, dict) and id_key is not None and id_key in item:
            label += f" ({id_key} {item[id_key]!r})"
        item_where = where.at(label)
        out.append((item_where, item_where.check(item, dict, "record")))
    return out
