"""The two errors every dataset reader raises: a malformed annotation file, and an image that is not on disk."""
from __future__ import annotations

from pathlib import Path


class DatasetFormatError(ValueError):
    """An annotation file that does not follow its official format.

    The message names the file, the record (index and/or id) and what is wrong with it.
    """

    def __init__(self, file: str | Path, record: str, problem: str):
        self.file = Path(file)
        self.record = record
        self.problem = problem
        super().__init__(f"{self.file}: {record}: {problem}")

    def __reduce__(self):
        return type(self), (self.file, self.record, self.problem)


class MissingImageError(FileNotFoundError):
    """An image (or video frame) that a record refers to but that is not on disk.

    The message names the record, the path looked for and, when known, the annotation file.
    """

    def __init__(self, record: str, path: str | Path, file: str | Path | None = None, also_tried: tuple[Path, ...] = ()):
        self.record = record
        self.path = Path(path)
        self.file = None if file is None else Path(file)
        self.also_tried = tuple(Path(p) for p in also_tried)
        source = f"{self.file}: " if self.file is not None else ""
        tried = f" (also tried {', '.join(str(p) for p in self.also_tried)})" if self.also_tried else ""
        super().__init__(f"{source}{record}: image not found: {self.path}{tried}")

    def __reduce__(self):
        return type(self), (self.record, self.path, self.file, self.also_tried)
