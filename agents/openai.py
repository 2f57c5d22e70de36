"""gleekit's tools for raw OpenAI-style tool calling: strict JSON schemas and a dispatcher.

``tool_specs(toolkit)`` gives one ``{"type": "function", "function": {...}}`` entry per tool with a *strict*
schema (every property listed in ``required``, ``additionalProperties: false`` on every object; a field
with a default becomes nullable, and null means "use the default"). ``dispatch(tool_call, toolkit)`` runs a
tool call from a chat-completions response (``{"id", "function": {"name", "arguments"}}``, as a dict or
the SDK's object) or a Responses-API ``function_call`` item (``{"call_id", "name", "arguments"}``), and
returns the ``role: "tool"`` message to append: its content is JSON with ``summary`` and ``result`` (or
``error``).
"""
from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from agents.core import TOOL_SPECS, GleeToolkit, ToolOutcome, parse_json_arguments
from agents.errors import BadArgument


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema in OpenAI strict form (see the module docstring)."""
    schema = copy.deepcopy(model.model_json_schema())
    _strict(schema)
    for definition in schema.get("$defs", {}).values():
        _strict(definition)
    return schema


def _strict(node: dict[str, Any]) -> None:
    node.pop("title", None)
    if node.get("type") != "object" or "properties" not in node:
        for key in ("anyOf", "items"):
            children = node.get(key)
            for child in children if isinstance(children, list) else [children] if children else []:
                _strict(child)
        return
    required = set(node.get("required", []))
    for name, prop in node["properties"].items():
        _strict(prop)
        if name not in required and "default" in prop:
            prop.pop("default", None)
            if not any(option.get("type") == "null" for option in prop.get("anyOf", [])):
                description = prop.pop("description", None)
                options = [dict(prop)]
                prop.clear()
                prop["anyOf"] = options + [{"type": "null"}]
                if description:
                    prop["description"] = description
        prop.pop("default", None)
    node["required"] = list(node["properties"])
    node["additionalProperties"] = False


def tool_specs(toolkit: GleeToolkit | None = None) -> list[dict[str, Any]]:
    """The ``tools`` parameter of a chat-completions request, one strict function per gleekit tool: those
    ``toolkit`` publishes (``describe`` only with a describer), else the standard ones."""
    specs = toolkit.specs if toolkit is not None else TOOL_SPECS
    return [
        {"type": "function", "function": {"name": spec.name, "description": spec.description,
                                          "parameters": strict_schema(spec.args_model), "strict": True}}
        for spec in specs.values()
    ]


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def dispatch(tool_call: Any, toolkit: GleeToolkit) -> dict[str, Any]:
    """Run one tool call; returns ``{"role": "tool", "tool_call_id": ..., "content": <JSON string>}``."""
    function = _field(tool_call, "function")
    source = function if function is not None else tool_call
    name, arguments = _field(source, "name"), _field(source, "arguments")
    call_id = _field(tool_call, "id") or _field(tool_call, "call_id")
    if isinstance(arguments, str):
        with contextlib.suppress(BadArgument):  # else the core parses the text again and names the problem
            parsed = parse_json_arguments(arguments)
            arguments = parsed if isinstance(parsed, Mapping) else arguments
    outcome = toolkit.call(name if isinstance(name, str) else str(name), _without_nulls(arguments))
    return {"role": "tool", "tool_call_id": str(call_id) if call_id is not None else None,
            "content": tool_message_content(outcome)}


def _without_nulls(value: Any, depth: int = 0) -> Any:
    """Drop null object members at every level (strict schemas send null for "use the default")."""
    if depth > 32:
        return value  # the core refuses such nesting
    if isinstance(value, Mapping):
        return {k: _without_nulls(v, depth + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v, depth + 1) for v in value]
    return value


def tool_message_content(outcome: ToolOutcome) -> str:
    """JSON text for the model: ``{"ok", "summary", "result"}`` or ``{"ok": false, "error": {...}}``."""
    if outcome.ok:
        return json.dumps({"ok": True, "summary": outcome.text, "result": outcome.structured()})
    return json.dumps({"ok": False, **outcome.structured()})
