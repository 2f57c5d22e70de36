"""Typed tool errors: what an LLM sees when a call fails, never a traceback.

Every failure of a tool call is one of five kinds, each with a stable ``code``:

* ``bad_argument`` — the arguments are malformed or inconsistent (wrong type, missing field, NaN, a point
  outside the image, a path outside the allowed folders, ...);
* ``not_found`` — a file, handle or frame folder that does not exist (or has expired);
* ``too_large`` — an input over a configured limit (pixels, bytes, categories, frames);
* ``timeout`` — the call ran longer than the request timeout;
* ``internal`` — anything else; the message is generic and the details go to the server log.
"""
from __future__ import annotations

from typing import Any, ClassVar


class ToolError(Exception):
    """A tool call that failed for a reason the caller can read; ``message`` is safe to show a model."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"type": self.code, "message": self.message}}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadArgument(ToolError):
    code = "bad_argument"


class NotFound(ToolError):
    code = "not_found"


class TooLarge(ToolError):
    code = "too_large"


class Timeout(ToolError):
    code = "timeout"


class InternalError(ToolError):
    code = "internal"
