"""OpenAI-style tool calling: strict schemas and the dispatcher (chat-completions and Responses shapes)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from agents.openai import dispatch, strict_schema, tool_specs
from agents.schemas import VisualPromptArgs


def objects_of(schema: dict):
    yield schema
    for definition in schema.get("$defs", {}).values():
        yield definition


def all_nodes(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from all_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_nodes(value)


def test_every_schema_is_strict():
    specs = tool_specs()
    assert [s["function"]["name"] for s in specs] == ["detect", "segment", "refer", "visual_prompt", "track", "select",
                                                      "refine", "crop", "compare"]
    for spec in specs:
        function = spec["function"]
        assert spec["type"] == "function" and function["strict"] is True and function["description"]
        for node in all_nodes(function["parameters"]):
            assert "default" not in node and "title" not in node
            if node.get("type") == "object":
                assert node["additionalProperties"] is False
                assert sorted(node["required"]) == sorted(node["properties"])


def test_defaults_become_nullable_and_required_fields_stay_plain():
    schema = strict_schema(VisualPromptArgs)
    assert schema["properties"]["image"]["type"] == "string"
    assert schema["properties"]["overlay"]["anyOf"] == [{"type": "boolean"}, {"type": "null"}]
    point = schema["$defs"]["Point"]["properties"]
    assert point["x"]["type"] == "number" and {"type": "null"} in point["positive"]["anyOf"]


def call(name, arguments, **extra):
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}, **extra}


def test_dispatch_chat_completions_call_with_nulls_for_defaults(toolkit):
    arguments = json.dumps({"image": "scene.png", "categories": ["circle"], "min_score": 0.0, "max_objects": None,
                            "overlay": None})
    message = dispatch(call("segment", arguments), toolkit)
    assert message["role"] == "tool" and message["tool_call_id"] == "call_1"
    content = json.loads(message["content"])
    assert content["ok"] is True and content["summary"] == content["result"]["summary"]
    objects = content["result"]["objects"]
    assert len(objects) == 20 and objects[0]["mask"]["counts"]  # the default max_objects


def test_dispatch_sdk_objects_and_responses_items(toolkit):
    sdk_call = SimpleNamespace(id="c9", function=SimpleNamespace(
        name="visual_prompt", arguments='{"image": "scene.png", "points": [{"x": 100, "y": 100, "positive": null}], '
                                       '"boxes": [], "overlay": false}'))
    content = json.loads(dispatch(sdk_call, toolkit)["content"])
    assert content["ok"] and content["result"]["objects"][0]["label"] == "point 0"
    item = {"type": "function_call", "call_id": "fc_1", "name": "detect",
            "arguments": '{"image": "scene.png", "categories": ["square"]}'}
    message = dispatch(item, toolkit)
    assert message["tool_call_id"] == "fc_1" and json.loads(message["content"])["ok"]


@pytest.mark.parametrize("name, arguments, message", [
    ("detect", '{"image": "scene.png", "categories": ', "not valid JSON"),
    ("detect", '"just a string"', "must be a JSON object"),
    ("erase_disk", "{}", "unknown tool 'erase_disk'"),
    ("detect", '{"image": "scene.png", "categories": ["a"], "min_score": "high"}', "min_score"),
    (None, "{}", "unknown tool 'None'"),
])
def test_dispatch_errors_are_tool_messages(toolkit, name, arguments, message):
    content = json.loads(dispatch(call(name, arguments), toolkit)["content"])
    assert content["ok"] is False and content["error"]["type"] == "bad_argument"
    assert message in content["error"]["message"]
