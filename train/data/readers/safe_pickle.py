"""Load a refer-style pickle without executing anything it contains.

``refs(*.p)`` files are Python-2 pickles of plain lists/dicts/str/int. Unpickling can call any importable
callable, so the unpickler here refuses every global: ``find_class`` always raises DatasetFormatError naming
the global (inspect such a file with ``pickletools.dis`` before trusting it). Python-2 ``str`` is decoded
as latin1.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from train.data.errors import DatasetFormatError


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        raise DatasetFormatError(
            self._path, "pickle", f"references the global {module}.{name}; only plain containers are allowed"
        )


def load_pickle_safely(path: str | Path) -> Any:
    """Unpickle plain data (containers, str, bytes, numbers) from ``path``; any global → DatasetFormatError."""
    path = Path(path)
    with path.open("rb") as file:
        try:
            return _PlainUnpickler(file, path).load()
        except DatasetFormatError:
            raise
        except Exception as exc:  # a truncated or corrupt pickle can fail in many ways
            raise DatasetFormatError(path, "pickle", f"not a valid pickle: {type(exc).__name__}: {exc}") from None
