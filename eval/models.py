"""The model a benchmark runs — a GLEE predictor, a GLEE-LLM or an LLM agent over GLEE — with its identity and
load report.

Evaluation refuses a model whose weights did not all load (missing, unexpected or mis-shaped checkpoint
entries, or no checkpoint at all): numbers from half-random weights are the classic way wrong results get
published. ``allow_incomplete=True`` evaluates anyway and the report says so loudly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glee_core.checkpoint import CheckpointError, LoadReport, weights_sha256

INCOMPLETE_FLAG = "--allow-incomplete-weights"
# LISA's fixed validation prompts (LISA.md §11): short phrases and long sentences.
SHORT_QUESTION = "What is {} in this image? Please output segmentation mask."
LONG_QUESTION = "{} Please output segmentation mask."


class IncompleteWeightsError(CheckpointError):
    """The model's checkpoint did not provide every weight."""


@dataclass
class EvalModel:
    """``kind`` is ``"glee"`` (``model`` a :class:`GleePredictor`), ``"mllm"`` (``model`` a ``GleeLLM``) or
    ``"agent"`` (``model`` a :class:`ReasoningAgent`; the hash and load report are its GLEE's).
    ``sha256`` hashes the weight files (hex); ``load_summary`` says what the load left out. A predictions file
    scored on its own is ``kind`` ``"predictions"`` with ``model`` None and the file's hash."""

    kind: str
    model: Any
    source: str
    sha256: str
    complete: bool
    load_summary: str

    @classmethod
    def wrap(cls, model: Any, source: str = "in-memory model") -> "EvalModel":
        """An already loaded predictor (anything with ``predict``) or GLEE-LLM (with ``generate``); no file hash."""
        return cls("mllm" if hasattr(model, "generate") else "glee", model, source, "", True, "loaded by the caller")

    @classmethod
    def from_predictions(cls, path: Path) -> "EvalModel":
        """Stand-in for a predictions file scored without running a model (``kind`` "predictions")."""
        return cls("predictions", None, str(path), weights_sha256([Path(path)]), True, "scored from a predictions file")

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "sha256": self.sha256, "weights_complete": self.complete,
                "load_summary": self.load_summary}

    def refer(self, image: np.ndarray, text: str, *, sentence: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
        """The object ``text`` describes in ``image`` (uint8 [H, W, 3]): (box [4] xyxy pixels or None, bool mask
        [H, W]). GLEE: its top-scoring referring result. GLEE-LLM: the answer to LISA's validation question
        (``LONG_QUESTION`` when ``sentence`` else ``SHORT_QUESTION``); the mask unites every ``[SEG]``'s mask, the
        box is the first one's; no ``[SEG]`` -> (None, empty mask). Agent: the mask it selects for ``text`` and
        that mask's box (None when empty)."""
        from glee_core.mask_ops import masks_to_boxes
        from glee_core.structures import Expression

        if self.kind == "agent":
            mask = self.reason(image, text)[0]
            return (masks_to_boxes(mask[None])[0] if mask.any() else None), mask
        empty = np.zeros(image.shape[:2], bool)
        if self.kind == "glee":
            found = self.model.predict(image, Expression(text), topk=1)
            return (found.boxes[0], found.masks[0]) if len(found) else (None, empty)
        answer = self.model.generate(image, (LONG_QUESTION if sentence else SHORT_QUESTION).format(text))
        masks = [d for d in answer.masks if len(d)]
        if not masks:
            return None, empty
        return masks[0].boxes[0], np.logical_or.reduce([d.masks[0] for d in masks])

    def reason(self, image: np.ndarray, question: str, *, sentence: bool = False) -> tuple[np.ndarray, str | None]:
        """The bool mask [H, W] answering a reasoning ``question`` and how the answer ended: an agent's stop reason
        ("selected", "no_match" or "step_limit"); None for GLEE and GLEE-LLM, whose mask is ``refer``'s."""
        if self.kind == "agent":
            result = self.model(image, question)
            return result.mask, result.stopped
        return self.refer(image, question, sentence=sentence)[1], None

    @property
    def predictor(self):
        """The GLEE predictor (of the GLEE-LLM's GLEE for ``mllm``, of the toolkit for ``agent``); None for a
        predictions file."""
        if self.kind == "predictions":
            return None
        if self.kind == "glee":
            return self.model
        if self.kind == "agent":
            return self.model.toolkit.predictor
        from glee_core.predictor import GleePredictor

        return GleePredictor(self.model.glee)


@dataclass
class ReasoningAgent:
    """A tool-calling chat model answering with :func:`agents.reasoning.reason_segment` over a GLEE toolkit."""

    chat_model: Any
    toolkit: Any
    max_steps: int = 6

    def __call__(self, image: np.ndarray, question: str):
        """The loop's :class:`~agents.reasoning.ReasoningResult` for ``question`` about ``image`` (uint8 [H, W, 3])."""
        from agents.reasoning import reason_segment

        return reason_segment(self.chat_model, self.toolkit, image, question, max_steps=self.max_steps)


def load_agent_model(glee: EvalModel, agent: str, *, base_url: str | None = None, max_steps: int = 6) -> EvalModel:
    """``agent`` — ``"openai:MODEL"``, MODEL served by any OpenAI-compatible endpoint at ``base_url`` (default:
    ``$OPENAI_BASE_URL`` or OpenAI's) — driving the reasoning loop over ``glee``'s predictor."""
    provider, _, name = agent.partition(":")
    if provider != "openai" or not name:
        raise ValueError(f"the agent must be 'openai:MODEL' (any OpenAI-compatible endpoint), got {agent!r}")
    try:
        from agents.core import GleeToolkit
        from agents.openai_chat import OpenAICompatibleChat
    except ImportError as error:
        raise ImportError(f"evaluating an agent needs pip install 'gleekit[agents]' ({error})") from error

    chat = OpenAICompatibleChat(model=name, **({"base_url": base_url} if base_url else {}))
    source = f"{agent} at {chat.base_url} (at most {max_steps} steps) over {glee.source}"
    return EvalModel("agent", ReasoningAgent(chat, GleeToolkit(glee.predictor), max_steps), source, glee.sha256,
                     glee.complete, glee.load_summary)


def _check(report: LoadReport | None, source: str, allow_incomplete: bool) -> tuple[bool, str]:
    complete = report is not None and report.ok
    summary = "random weights (no checkpoint)" if report is None else report.summary()
    if not complete and not allow_incomplete:
        raise IncompleteWeightsError(f"refusing to evaluate {source}: its weights did not all load ({summary}). "
                                     f"Fix the checkpoint, or pass {INCOMPLETE_FLAG} to evaluate anyway "
                                     "(the results will be marked INCOMPLETE WEIGHTS)")
    return complete, summary


def load_eval_model(source: str | Path, *, preset: str | None = None, allow_incomplete: bool = False,
                    device: str | None = None) -> EvalModel:
    """Load ``source``: a GLEE-LLM folder (with ``gleellm.json``) or bundled name, a GLEE model folder / bundled
    name, or an official GLEE checkpoint file with ``preset``. Raises :class:`IncompleteWeightsError` unless every
    weight loaded or ``allow_incomplete``."""
    from glee_core.modeling.glee import GleeModel, bundled_model_dir
    from glee_core.predictor import GleePredictor

    name = str(source)
    try:
        from mllm.io import CONFIG_FILE, load_gleellm, resolve_model_dir

        mllm_dir = resolve_model_dir(name)
        is_mllm = (mllm_dir / CONFIG_FILE).is_file()
    except ImportError:  # gleekit[mllm] not installed: only GLEE models
        is_mllm = False
    if is_mllm:
        model = load_gleellm(mllm_dir, strict=False)
        complete, summary = _check(model.load_report, name, allow_incomplete)
        return EvalModel("mllm", model, name, weights_sha256([mllm_dir]), complete, summary)
    path = Path(name)
    folder = path if path.exists() else bundled_model_dir(name)
    glee = GleeModel.from_pretrained(name, preset=preset, strict=False)
    complete, summary = _check(glee.load_report, name, allow_incomplete)
    return EvalModel("glee", GleePredictor(glee, device=device), name, weights_sha256([folder]), complete, summary)
