"""gleekit: GLEE, the general object foundation model, as the object-level vision module of LLM systems.

The public API lives here; ``import gleekit`` is all a user needs::

    from gleekit import GleeModel, GleePredictor, Categories, Expression, VisualPrompt
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GleeModel": "glee_core.modeling.glee",
    "GleeConfig": "glee_core.config",
    "GleeOutput": "glee_core.modeling.glee",
    "GleePredictor": "glee_core.predictor",
    "Detections": "glee_core.structures",
    "Tracks": "glee_core.structures",
    "Categories": "glee_core.structures",
    "Expression": "glee_core.structures",
    "VisualPrompt": "glee_core.structures",
    "Caption": "glee_core.structures",
    "Vocabulary": "glee_core.vocabulary",
    "OnnxGlee": "glee_core.onnx_export",
    "list_presets": "glee_core.config",
    "OnlineTracker": "glee_core.online_tracking",
    "GleeToolkit": "agents.core",
    "GleeLLM": "mllm.modeling",
    "GleeLLMConfig": "mllm.config",
    "MllmAnswer": "mllm.generation",
    "load_gleellm": "mllm.io",
    "save_gleellm": "mllm.io",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Import lazily, so ``import gleekit`` (and ``gleekit --help``) stays fast."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gleekit' has no attribute {name!r}")
