"""The issue-11 tools (refine, crop, compare, describe, track from a handle, grouped calls) through every surface
— Python API, langchain-core tools, an in-process MCP server and OpenAI dispatch — and handles made through one
surface used through another (they share one GleeToolkit)."""
from __future__ import annotations

import json

import anyio.from_thread
import mcp
import pytest

from agents.core import GleeToolkit
from agents.langchain import glee_tools
from agents.mcp_server import build_server
from agents.openai import dispatch, tool_specs
from tests.agents.test_openai import all_nodes

NEW_TOOLS = ["compare", "crop", "describe", "refine"]


def fake_describer(pixels, record) -> str:
    return f"a {record.label} in a {pixels.shape[1]}x{pixels.shape[0]} image"


@pytest.fixture(scope="module")
def described(toolkit, image_root):
    """A toolkit with a describer (sharing the nano predictor), so that describe is published."""
    described = GleeToolkit(toolkit.predictor, allowed_roots=[image_root], describer=fake_describer)
    yield described
    described.close()


@pytest.fixture(scope="module")
def mcp_client(described):
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(mcp.Client(build_server(described))) as client:
        yield portal, client


@pytest.fixture(scope="module")
def surfaces(described, mcp_client):
    """name -> call(tool, arguments) -> (ok, structured result or None, text)."""
    tools = {tool.name: tool for tool in glee_tools(described)}
    portal, client = mcp_client

    def python(name, arguments):
        outcome = described.call(name, arguments)
        return outcome.ok, outcome.structured() if outcome.ok else None, outcome.text

    def langchain(name, arguments):
        message = tools[name].invoke({"name": name, "args": arguments, "id": "c1", "type": "tool_call"})
        ok = message.status == "success"
        return ok, message.artifact if ok else None, message.content

    def mcp_surface(name, arguments):
        result = portal.call(client.call_tool, name, arguments)  # the client checks the output schema
        return not result.is_error, result.structured_content, result.content[0].text

    def openai(name, arguments):
        content = json.loads(dispatch({"id": "c1", "function": {"name": name, "arguments": json.dumps(arguments)}},
                                      described)["content"])
        return content["ok"], content.get("result"), content["summary"] if content["ok"] else content["error"]["message"]

    return {"python": python, "langchain": langchain, "mcp": mcp_surface, "openai": openai}


def test_every_surface_publishes_the_new_tools(described, mcp_client):
    portal, client = mcp_client
    listed = {tool.name: tool for tool in portal.call(client.list_tools).tools}
    names = {tool.name for tool in glee_tools(described)}
    specs = {spec["function"]["name"]: spec["function"] for spec in tool_specs(described)}
    for tool in NEW_TOOLS:
        assert tool in listed and tool in names and tool in specs
        required = set(listed[tool].input_schema["required"])
        assert required == ({"first", "second"} if tool == "compare" else {"object"})
    assert "describe" not in {spec["function"]["name"] for spec in tool_specs()}  # no describer, no describe
    for spec in specs.values():  # strict: every property required, no defaults
        for node in all_nodes(spec["parameters"]):
            assert "default" not in node
            if node.get("type") == "object":
                assert sorted(node["required"]) == sorted(node["properties"])
    assert {"type": "null"} in specs["detect"]["parameters"]["properties"]["images"]["anyOf"]
    assert {"offset", "source"} <= set(listed["crop"].output_schema["properties"])
    segment = listed["segment"].output_schema
    assert segment["type"] == "object" and len(segment["anyOf"]) == 2  # ImageResult or GroupedResult


@pytest.mark.parametrize("surface", ["python", "langchain", "mcp", "openai"])
def test_new_tools_through_each_surface(surfaces, surface):
    call = surfaces[surface]
    ok, segment, _ = call("segment", {"image": "scene.png", "categories": ["circle"], "min_score": 0.0,
                                      "max_objects": 2})
    assert ok
    first, second = (o["id"] for o in segment["objects"])

    ok, refined, text = call("refine", {"object": first})
    assert ok and refined["objects"][0]["label"] == f"refined {first}" and text == refined["summary"]
    ok, crop, _ = call("crop", {"object": first, "padding": 4})
    assert ok and crop["source"] == segment["image"] and crop["object"] == first
    ok, inner, _ = call("detect", {"image": crop["image"], "categories": ["circle"], "min_score": 0.0})
    assert ok and (inner["width"], inner["height"]) == (crop["width"], crop["height"])
    ok, compared, _ = call("compare", {"first": first, "second": refined["objects"][0]["id"]})
    assert ok and compared["iou_of"] == "masks" and compared["iou"] > 0.5  # measured 0.99
    ok, described, text = call("describe", {"object": second})
    assert ok and described["description"] == "a circle in a 256x256 image" and described["description"] in text
    ok, tracked, _ = call("track", {"frames": [segment["image"], segment["image"]], "object": first, "min_score": 0.0})
    assert ok and [len(f) for f in tracked["frames"]] == [1, 1] and tracked["tracks"][0]["label"].startswith(first)

    ok, grouped, text = call("segment", {"images": [segment["image"], crop["image"]], "categories": ["circle"],
                                         "max_objects": 1, "min_score": 0.0})
    assert ok and [r["image"] for r in grouped["results"]] == [segment["image"], crop["image"]]
    assert text == grouped["summary"] and text.startswith("2 results (2 images):")
    ok, referred, _ = call("refer", {"image": segment["image"], "expressions": ["the circle", "the star"]})
    assert ok and [r["objects"][0]["label"] for r in referred["results"]] == ["the circle", "the star"]

    ok, result, text = call("refine", {"object": "obj_123456"})
    assert not ok and result is None and "unknown or expired handle 'obj_123456'" in text
    ok, _, text = call("compare", {"first": first, "second": crop["image"]})
    assert not ok and "is an image handle; an object handle (obj_N) is needed here" in text


def test_handles_cross_surfaces(surfaces, described):
    """An object found through langchain is refined through MCP, compared through OpenAI, cropped in Python."""
    ok, segment, _ = surfaces["langchain"]("segment", {"image": "scene.png", "categories": ["square"],
                                                       "min_score": 0.0, "max_objects": 1})
    original = segment["objects"][0]["id"]
    ok, refined, _ = surfaces["mcp"]("refine", {"object": original, "points": [{"x": 3, "y": 3, "positive": False}]})
    assert ok and refined["image"] == segment["image"]
    new = refined["objects"][0]["id"]
    assert described.object(new).label == f"refined {original}"
    ok, compared, _ = surfaces["openai"]("compare", {"first": new, "second": original})
    assert ok and compared == described.compare(first=new, second=original).model_dump(mode="json")
    crop = described.crop(object=new)
    ok, tracked, _ = surfaces["langchain"]("track", {"frames": [segment["image"]], "object": new, "min_score": 0.0})
    assert ok and tracked["num_frames"] == 1 and crop.source == segment["image"]
