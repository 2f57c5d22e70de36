"""langchain-core surface: BaseTools with content + artifact, errors as ToolMessages, a real agent loop."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from agents.langchain import GleeTool, glee_tools
from agents.schemas import DetectArgs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langchain_agent.py"


@pytest.fixture(scope="module")
def tools(toolkit):
    return {tool.name: tool for tool in glee_tools(toolkit)}


def tool_call(name, args, id="call_1"):
    return {"name": name, "args": args, "id": id, "type": "tool_call"}


def test_tools_publish_the_core_schemas(tools):
    assert sorted(tools) == ["compare", "crop", "detect", "refer", "refine", "segment", "select", "track", "visual_prompt"]
    detect = tools["detect"]
    assert isinstance(detect, GleeTool) and detect.args_schema is DetectArgs
    assert detect.response_format == "content_and_artifact"
    schema = convert_to_openai_tool(detect)["function"]
    assert schema["parameters"]["required"] == ["categories"]  # 'image' or 'images', checked by the core
    assert "Object categories to find" in schema["parameters"]["properties"]["categories"]["description"]


def test_tool_call_gives_summary_and_structured_artifact(tools):
    message = tools["segment"].invoke(tool_call("segment", {"image": "scene.png", "categories": ["circle"],
                                                            "min_score": 0.0, "max_objects": 3, "overlay": True}))
    assert isinstance(message, ToolMessage) and message.status == "success" and message.tool_call_id == "call_1"
    assert message.content == message.artifact["summary"] and message.content.startswith("3 objects in img_")
    assert len(message.artifact["objects"]) == 3 and message.artifact["overlay_pngs"][0][:8] == b"\x89PNG\r\n\x1a\n"
    # Plain arguments (not a tool call) return the content only.
    assert tools["detect"].invoke({"image": "scene.png", "categories": ["circle"], "min_score": 1.0}).startswith("No ")


@pytest.mark.parametrize("tool, args, message", [
    ("detect", {"image": "scene.png"}, "bad_argument: categories: Field required"),
    ("detect", {"image": "/etc/passwd", "categories": ["a"]}, "bad_argument: path '/etc/passwd' is outside"),
    ("refer", {"image": "img_77777", "expression": "it"}, "not_found: unknown or expired handle 'img_77777'"),
    ("visual_prompt", {"image": "scene.png", "points": [{"x": "left", "y": 2}]}, "bad_argument: points.0.x"),
])
def test_errors_come_back_as_error_tool_messages(tools, tool, args, message):
    reply = tools[tool].invoke(tool_call(tool, args))
    assert reply.status == "error" and reply.content.startswith(message)


def test_odd_inputs_are_error_messages_not_exceptions(tools):
    assert tools["detect"].invoke("scene.png").startswith("bad_argument:")
    assert tools["detect"].invoke({"image": ["a"], "categories": "circle"}).startswith("bad_argument:")


def test_example_agent_loop_runs_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("langchain_agent", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    messages = example.main(tmp_path)
    kinds = [m.type for m in messages]
    assert kinds == ["human", "ai", "tool", "ai", "tool", "ai"]
    first, second = messages[2], messages[4]
    assert first.status == "success" and first.artifact["image"] == "img_1"
    assert second.status == "success" and second.artifact["image"] == "img_1"  # the handle was reused
    assert len(second.artifact["objects"]) == 1 and len(second.artifact["overlay_pngs"]) == 1
    assert messages[-1].content == "I found the shapes and marked the largest one."
