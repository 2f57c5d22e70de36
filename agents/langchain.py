"""gleekit's tools as langchain-core ``BaseTool``s.

Each tool has the core's pydantic ``args_schema`` (so ``bind_tools`` shows the model every field and its
description) and ``response_format="content_and_artifact"``: the model reads the text summary, the
application gets the full structured result (plus ``overlay_pngs``, a list of PNG bytes, one per image result,
when an overlay was asked for)
as the ``ToolMessage.artifact``. Every failure — malformed arguments included — comes back as a
``ToolMessage`` with ``status="error"`` and the typed error text (``bad_argument: ...``), raised inside
as ``ToolException`` and turned into the message by ``handle_tool_error``.

Example::

    from agents.langchain import glee_tools
    tools = glee_tools(allowed_roots=["./images"])
    llm_with_tools = chat_model.bind_tools(tools)
"""
from __future__ import annotations

from typing import Any, Literal

from langchain_core.tools import BaseTool, ToolException
from pydantic import ConfigDict, SkipValidation

from agents.core import GleeToolkit

RAW = "_raw_arguments"


class GleeTool(BaseTool):
    """One gleekit tool; arguments are validated by the core (one set of rules and messages everywhere)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    toolkit: SkipValidation[GleeToolkit]
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True

    def _parse_input(self, tool_input: Any, tool_call_id: str | None) -> dict[str, Any]:
        # Validation happens in the core, so bad input becomes a typed error message, not a raised exception.
        return {RAW: tool_input}

    def _run(self, *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        kwargs.pop("run_manager", None)
        outcome = self.toolkit.call(self.name, kwargs.get(RAW))
        if not outcome.ok:
            raise ToolException(outcome.text)
        artifact = outcome.structured()
        if outcome.overlays:
            artifact["overlay_pngs"] = list(outcome.overlays)
        return outcome.text, artifact


def glee_tools(toolkit: GleeToolkit | None = None, **toolkit_options: Any) -> list[GleeTool]:
    """One ``GleeTool`` per core operation, all over one ``GleeToolkit`` (built from the options if not given)."""
    if toolkit is None:
        toolkit = GleeToolkit(**toolkit_options)
    elif toolkit_options:
        raise ValueError("pass either a toolkit or the options to build one, not both")
    return [
        GleeTool(name=spec.name, description=spec.description, args_schema=spec.args_model, toolkit=toolkit)
        for spec in toolkit.specs.values()
    ]
