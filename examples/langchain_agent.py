"""A tool-calling agent loop over gleekit's langchain tools, end to end.

The chat model is langchain-core's scripted ``GenericFakeChatModel`` (no LLM to download): it asks for the
shapes in a scene, then refers to one of them by the image handle the first call returned, then answers.
Swap in any chat model that supports ``bind_tools`` (ChatOpenAI, ChatAnthropic, ChatOllama, ...)::

    model = ChatOpenAI(model="...").bind_tools(tools)

Run: ``python examples/langchain_agent.py`` (writes the scene to a temporary folder the tools may read).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from agents.langchain import glee_tools


def run_agent(model: Runnable, tools: list[BaseTool], question: str, max_turns: int = 8) -> list[BaseMessage]:
    """Call the model, run every tool call it makes, feed the results back, until it answers in text."""
    by_name = {tool.name: tool for tool in tools}
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(max_turns):
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        for call in reply.tool_calls:
            tool = by_name.get(call["name"])
            if tool is None:
                messages.append(ToolMessage(f"bad_argument: unknown tool {call['name']!r}", tool_call_id=call["id"],
                                            status="error"))
            else:
                messages.append(tool.invoke(call))
    return messages


def scripted_model() -> GenericFakeChatModel:
    """Stands in for an LLM: two tool calls (the second reuses the image handle), then an answer."""
    return GenericFakeChatModel(messages=iter([
        AIMessage("", tool_calls=[{"name": "segment", "id": "call_1",
                                   "args": {"image": "scene.png", "categories": ["circle", "square", "star"],
                                            "min_score": 0.2, "max_objects": 5}}]),
        AIMessage("", tool_calls=[{"name": "refer", "id": "call_2",
                                   "args": {"image": "img_1", "expression": "the largest shape", "overlay": True}}]),
        AIMessage("I found the shapes and marked the largest one."),
    ]))


def main(folder: Path | None = None) -> list[BaseMessage]:
    from PIL import Image

    from train.data.shapeworld import generate_scene, scene_seed

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(folder or temp)
        Image.fromarray(generate_scene(scene_seed("test", 3), split="test").image).save(folder / "scene.png")
        tools = glee_tools(allowed_roots=[folder])
        messages = run_agent(scripted_model(), tools, "Which shapes are in scene.png, and which is the largest?")
    for message in messages:
        text = message.content if isinstance(message.content, str) else str(message.content)
        print(f"[{message.type}] {text or message.tool_calls}")
    return messages


if __name__ == "__main__":
    main()
