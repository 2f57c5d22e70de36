"""Optional dependencies of ``adapters``: imported on first use, with the install hint when missing.

``peft`` comes with the ``mllm`` (and ``train``) extra and ``bitsandbytes`` with the ``quant`` extra, so that
``import adapters`` works on a plain install.
"""
from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, extra: str) -> ModuleType:
    """``module`` imported; an ImportError saying ``pip install "gleekit[<extra>]"`` when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed; install it with: pip install \"gleekit[{extra}]\"") from err
