"""Reading one JSON file that a user handed in, with errors that name it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path, what: str, error: type[Exception] = ValueError) -> Any:
    """The parsed content of the UTF-8 JSON file ``path``.

    ``what`` names the file in messages ("calibration file"). A missing file raises FileNotFoundError
    ("<what> not found: <path>"); bytes that are not UTF-8 JSON raise ``error`` ("<path> is not a JSON file: ...").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as cause:
        raise error(f"{path} is not a JSON file: {cause}") from None
