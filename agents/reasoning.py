"""Reasoning segmentation with any tool-calling chat model: plan short phrases, segment them, look at a
numbered overlay, then select objects by handle, retry with another phrase, or say that nothing matches.

``reason_segment`` drives a langchain-core chat model that supports ``bind_tools`` over a
:class:`~agents.core.GleeToolkit`. The model sees the image and the question, and gets the tools detect,
segment, refer, visual_prompt, select and ``no_match``. Every tool call runs through ``toolkit.call``
(image tools draw a numbered overlay unless the model asks otherwise); its summary comes back as a
``ToolMessage`` (``status="error"`` with the typed error text for any failure: unknown tool, bad JSON,
invalid arguments), and the overlays of a turn follow in one ``HumanMessage`` as base64 PNG data URLs,
with the number → handle key. The loop ends on the first successful select (``stopped="selected"``) or
no_match (``"no_match"``), or after ``max_steps`` model replies (``"step_limit"``); a reply without tool
calls is answered with a reminder to finish with a tool call.

Example::

    from agents.openai_chat import OpenAICompatibleChat  # any OpenAI-compatible endpoint; or ChatOpenAI, ...
    result = reason_segment(OpenAICompatibleChat(model="gpt-4o-mini"), GleeToolkit(allowed_roots=["."]),
                            "desk.jpg", "what can I drink from?")
    result.mask  # bool [H, W]
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field

from agents.core import GleeToolkit, ToolOutcome, validate_arguments
from agents.errors import BadArgument
from agents.langchain import glee_tools
from agents.results import encode_png
from agents.schemas import MAX_SCHEMA_TEXT
from glee_core.mask_ops import decode_rle

NO_MATCH = "no_match"
OVERLAY_TOOLS = ("detect", "segment", "refer", "visual_prompt")
LOOP_TOOLS = (*OVERLAY_TOOLS, "select", NO_MATCH)

SYSTEM_PROMPT = (
    "You find the objects in an image that answer a question, using tools, and finish by selecting them.\n"
    "1. Think of short noun phrases for what the question asks about (e.g. 'red circle', 'star').\n"
    "2. Call refer (the one object a phrase describes) or segment (every object of some categories) on the "
    "image handle. Each result lists objects with handles (obj_N) and comes with an overlay image in which "
    "each object is outlined and numbered 1..N in the result's order; the key maps numbers to handles.\n"
    "3. Look at the overlay. If the right objects are outlined, call select with the image handle and their "
    "handles (several if the question asks for several). If not, try another phrase or tool.\n"
    "4. If nothing in the image answers the question, call no_match with a short reason.\n"
    "Always finish with select or no_match; do not answer in plain text."
)
NUDGE = ("Finish with a tool call: select the objects that answer the question, look again with refer or "
         "segment, or call no_match if nothing in the image matches.")


class NoMatchArgs(BaseModel):
    """Say that nothing in the image answers the question; ends the task with an empty mask."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=MAX_SCHEMA_TEXT, description="Why nothing matches, in one sentence.")


@dataclass
class ReasoningResult:
    """What ``reason_segment`` found.

    Attributes:
        mask: bool [H, W], the union of the chosen objects' masks; all False unless ``stopped == "selected"``.
        objects: handles (``obj_N``) of the chosen objects, in the order selected.
        answer: the model's text in its last reply, else the select summary or the no_match reason.
        stopped: "selected", "no_match" or "step_limit".
        transcript: every message, system prompt first.
        tool_calls: ``(name, arguments as the model sent them, ok)`` per call, in order.
    """

    mask: np.ndarray
    objects: list[str]
    answer: str
    stopped: Literal["selected", "no_match", "step_limit"]
    transcript: list[BaseMessage]
    tool_calls: list[tuple[str, Any, bool]]


def reason_segment(chat_model: BaseChatModel, toolkit: GleeToolkit, image: str | np.ndarray, question: str, *,
                   max_steps: int = 6) -> ReasoningResult:
    """Answer ``question`` about ``image`` (a handle, path or data URL, as the tools take it, or uint8 [H, W, 3]
    RGB pixels) with masks.

    Raises the toolkit's ``ToolError`` when ``image`` cannot be loaded; nothing the model does raises.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    handle, pixels = toolkit.images.image(image)
    height, width = pixels.shape[:2]
    no_match = {"type": "function", "function": {"name": NO_MATCH, "description": NoMatchArgs.__doc__,
                                                 "parameters": NoMatchArgs.model_json_schema()}}
    model = chat_model.bind_tools([*(t for t in glee_tools(toolkit) if t.name in LOOP_TOOLS), no_match])
    transcript: list[BaseMessage] = [SystemMessage(SYSTEM_PROMPT), HumanMessage(content=[
        {"type": "text", "text": f"The image is {handle} ({width}x{height} pixels). Question: {question}"},
        _image_block(encode_png(pixels)),
    ])]
    calls: list[tuple[str, Any, bool]] = []
    nothing = np.zeros((height, width), dtype=bool)
    for _ in range(max_steps):
        reply = model.invoke(transcript)
        transcript.append(reply)
        requests = [(c["name"], c["args"], c["id"]) for c in reply.tool_calls]
        requests += [(c.get("name"), c.get("args"), c.get("id")) for c in reply.invalid_tool_calls]
        if not requests:
            transcript.append(HumanMessage(NUDGE))
            continue
        overlays = []
        for k, (name, args, call_id) in enumerate(requests):
            outcome = _execute(toolkit, handle, name, args)
            calls.append((outcome.tool, args, outcome.ok))
            transcript.append(ToolMessage(outcome.text, tool_call_id=call_id or "", name=outcome.tool,
                                          status="success" if outcome.ok else "error", artifact=outcome.structured()))
            if outcome.ok and outcome.tool in ("select", NO_MATCH):
                _answer_unrun(transcript, requests[k + 1:], outcome.tool)
            if outcome.ok and outcome.tool == "select":
                mask = decode_rle(outcome.result.mask.model_dump())
                return ReasoningResult(mask, [o.id for o in outcome.result.objects], reply.text or outcome.text,
                                       "selected", transcript, calls)
            if outcome.ok and outcome.tool == NO_MATCH:
                return ReasoningResult(nothing, [], reply.text or outcome.result.reason or outcome.text, "no_match",
                                       transcript, calls)
            if outcome.overlay_png is not None and outcome.result.objects:
                overlays.append(outcome)
        if overlays:
            transcript.append(_overlay_message(overlays))
    return ReasoningResult(nothing, [], f"No selection within {max_steps} steps.", "step_limit", transcript, calls)


def _answer_unrun(transcript: list[BaseMessage], requests: list[tuple[Any, Any, Any]], ended_by: str) -> None:
    """An error answer for each tool call of the reply after the one that ended the task (chat APIs refuse a
    transcript with an unanswered call)."""
    for name, _, call_id in requests:
        transcript.append(ToolMessage(f"not run: the task ended with {ended_by}", tool_call_id=call_id or "",
                                      name=str(name), status="error"))


def _execute(toolkit: GleeToolkit, handle: str, name: Any, args: Any) -> ToolOutcome:
    """Run one tool call of the loop; never raises (failures are error outcomes)."""
    tool = str(name)
    try:
        if tool == NO_MATCH:
            reason = validate_arguments(NoMatchArgs, args).reason
            return ToolOutcome(tool, f"Nothing matches: {reason or 'no reason given'}.",
                               result=NoMatchArgs(reason=reason))
        if tool not in LOOP_TOOLS:
            raise BadArgument(f"unknown tool {tool[:60]!r}; tools are {sorted(LOOP_TOOLS)}")
    except BadArgument as error:
        return ToolOutcome(tool, str(error), error=error)
    if tool in OVERLAY_TOOLS and isinstance(args, dict):
        args = {"overlay": True, "overlay_style": "numbered", **args}
    outcome = toolkit.call(tool, args)
    if outcome.ok and tool == "select" and outcome.result.image != handle:
        error = BadArgument(f"select objects of {handle}, the image of the question, not of {outcome.result.image}")
        return ToolOutcome(tool, str(error), error=error)
    return outcome


def _image_block(png: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}}


def _overlay_message(outcomes: list[ToolOutcome]) -> HumanMessage:
    """The overlays of one turn, each after its key: "1 = obj_4 ('red circle' 0.91), 2 = …"."""
    content: list[str | dict[str, Any]] = []
    for outcome in outcomes:
        key = ", ".join(f"{k} = {o.id} ({o.label!r} {o.score:.2f})" for k, o in enumerate(outcome.result.objects, 1))
        content += [{"type": "text", "text": f"Numbered overlay of the {outcome.tool} result on "
                                             f"{outcome.result.image}: {key}."}, _image_block(outcome.overlay_png)]
    return HumanMessage(content=content)
