"""Finding a benchmark's files under a data root, with an error that lists every place looked at."""
from __future__ import annotations

from pathlib import Path


def first_existing(candidates: list[Path], what: str, layout: str) -> Path:
    """The first of ``candidates`` that exists; otherwise FileNotFoundError naming ``what``, every path tried
    and the expected ``layout``."""
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = "\n  ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{what} not found; tried:\n  {tried}\nExpected layout: {layout}")
