"""OpenAICompatibleChat against a local fake endpoint: the request it sends, tool calls parsed back (bad JSON
arguments kept for the loop to report), the reasoning loop end to end over the nano toolkit, and clear errors."""
from __future__ import annotations

import importlib.util
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from PIL import Image

from agents.langchain import glee_tools
from agents.openai_chat import ChatEndpointError, OpenAICompatibleChat
from agents.reasoning import LOOP_TOOLS, reason_segment
from glee_core.mask_ops import decode_rle
from tests.agents.conftest import data_url
from tests.agents.fake_openai import FakeOpenAI, completion, loop_reply, turns

BAD_ARGUMENTS = '{"image": '
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent_reasonseg.py"


def test_a_tool_call_round_trips(toolkit, scene):
    reply = completion("Looking.", [("refer", {"image": "img_1", "expression": "the cross"}, "call_7"),
                                    ("select", BAD_ARGUMENTS, "call_8")])
    with FakeOpenAI(lambda body: reply) as server:
        chat = OpenAICompatibleChat(model="fake-vlm", base_url=server.base_url + "/", api_key="sk-secret",
                                    max_tokens=64)
        model = chat.bind_tools(glee_tools(toolkit), tool_choice="auto")
        image = {"type": "image_url", "image_url": {"url": data_url(scene.image)}}
        question = HumanMessage(content=[{"type": "text", "text": "Find the cross."}, image])
        transcript = [SystemMessage("Be brief."), question]
        answer = model.invoke(transcript)
        transcript += [answer, ToolMessage("1 object in img_1: obj_2", tool_call_id="call_7"),
                       ToolMessage("bad_argument: not valid JSON", tool_call_id="call_8", status="error")]
        model.invoke(transcript)
    assert answer.content == "Looking." and answer.response_metadata["finish_reason"] == "tool_calls"
    assert answer.tool_calls == [{"name": "refer", "args": {"image": "img_1", "expression": "the cross"},
                                  "id": "call_7", "type": "tool_call"}]
    (invalid,) = answer.invalid_tool_calls
    assert (invalid["name"], invalid["args"], invalid["id"]) == ("select", BAD_ARGUMENTS, "call_8")

    first, second = server.requests
    assert first["path"] == "/v1/chat/completions" and first["headers"]["Authorization"] == "Bearer sk-secret"
    body = first["body"]
    assert (body["model"], body["max_tokens"], body["tool_choice"]) == ("fake-vlm", 64, "auto")
    assert "temperature" not in body and "stop" not in body
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"][1] == image
    tools = {t["function"]["name"]: t for t in body["tools"]}
    assert set(tools) == set(toolkit.specs) and all(t["type"] == "function" for t in tools.values())
    refer = tools["refer"]["function"]["parameters"]
    assert {"image", "expression"} <= set(refer["required"]) and refer["properties"]["expression"]["type"] == "string"
    # The answer goes back with both calls (the bad one as written), each answered by its tool message.
    assistant, *results = second["body"]["messages"][2:]
    assert [(c["id"], c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        ("call_7", json.dumps({"image": "img_1", "expression": "the cross"})), ("call_8", BAD_ARGUMENTS)]
    assert [(m["role"], m["tool_call_id"]) for m in results] == [("tool", "call_7"), ("tool", "call_8")]
    assert "sk-secret" not in repr(chat) + str(chat.model_dump())


def test_reason_segment_selects_through_the_endpoint(toolkit):
    def reply(body):
        answer = loop_reply(body)
        if turns(body) == 0:  # also a call with broken JSON, which the loop reports back to the model
            answer["choices"][0]["message"]["tool_calls"].append(
                {"id": "call_bad", "type": "function", "function": {"name": "refer", "arguments": BAD_ARGUMENTS}})
        return answer

    with FakeOpenAI(reply) as server:
        chat = OpenAICompatibleChat(model="fake-vlm", base_url=server.base_url, api_key=None)
        result = reason_segment(chat, toolkit, "scene.png", "Which shape is numbered 1?")
    assert result.stopped == "selected" and result.answer == "Number 1." and len(result.objects) == 1
    np.testing.assert_array_equal(result.mask, decode_rle(toolkit.object(result.objects[0]).mask.model_dump()))
    assert [(name, ok) for name, _, ok in result.tool_calls] == [("segment", True), ("refer", False), ("select", True)]
    first, second = (r["body"] for r in server.requests)
    assert "Authorization" not in server.requests[0]["headers"]
    assert sorted(t["function"]["name"] for t in first["tools"]) == sorted(LOOP_TOOLS)
    assert first["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    tool_results = {m["tool_call_id"]: m["content"] for m in second["messages"] if m["role"] == "tool"}
    assert tool_results["call_1"].startswith("2 objects in img_")
    assert tool_results["call_bad"] == "bad_argument: the arguments are not valid JSON"
    overlay = second["messages"][-1]["content"]
    assert overlay[0]["text"].startswith("Numbered overlay of the segment result")
    assert overlay[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_the_example_runs_against_the_endpoint_in_the_environment(image_root, tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("agent_reasonseg", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with FakeOpenAI(loop_reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        monkeypatch.setenv("GLEEKIT_AGENT_MODEL", "local-vlm")
        result = example.main([str(image_root / "scene.png"), "Which shape?", "--out", str(tmp_path / "mask.png")])
    assert result.stopped == "selected" and server.requests[0]["body"]["model"] == "local-vlm"
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-env"
    with Image.open(tmp_path / "mask.png") as written:
        np.testing.assert_array_equal(np.asarray(written) > 0, result.mask)
    assert "selected: Number 1." in capsys.readouterr().out


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


def slow(body):
    time.sleep(1.0)
    return completion("late")


@pytest.mark.parametrize("reply, message", [
    (lambda body: (401, {"error": {"message": "Incorrect API key provided: sk-***", "type": "invalid_request_error"}}),
     r"/v1/chat/completions answered HTTP 401: Incorrect API key provided: sk-\*\*\*$"),
    (lambda body: (500, "upstream crashed"), "answered HTTP 500: upstream crashed$"),
    (lambda body: (404, {"detail": "Not Found"}), "answered HTTP 404: Not Found$"),
    (lambda body: (200, "not json{"), "answered with a body that is not JSON: 'not json{'"),
    (lambda body: {"object": "chat.completion", "choices": []}, r"answered without choices\[0\]\.message"),
    (lambda body: {"choices": {"message": "hi"}}, r"answered without choices\[0\]\.message"),
    (slow, "did not answer within 0.3 s"),
    (None, "the request to http://127.0.0.1:.* failed: .*refused"),
])
def test_endpoint_failures_are_clear_errors(reply, message):
    if reply is None:
        chat = OpenAICompatibleChat(model="m", base_url=closed_port_url())
        with pytest.raises(ChatEndpointError, match=message):
            chat.invoke("hi")
        return
    with FakeOpenAI(reply) as server:
        chat = OpenAICompatibleChat(model="m", base_url=server.base_url, api_key="sk-secret", timeout=0.3)
        with pytest.raises(ChatEndpointError, match=message) as raised:
            chat.invoke("hi")
    assert "sk-secret" not in str(raised.value)


def test_settings_come_from_the_environment_and_are_checked(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    chat = OpenAICompatibleChat(model="llava")
    assert chat.base_url == "http://localhost:11434/v1" and chat.api_key.get_secret_value() == "sk-env"
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert OpenAICompatibleChat(model="gpt-4o").base_url == "https://api.openai.com/v1"
    with pytest.raises(ValueError, match="base_url must be an http"):
        OpenAICompatibleChat(model="m", base_url="localhost:8000")


@pytest.mark.parametrize("raw, valid", [
    ({"id": "a", "function": {"name": "select", "arguments": "[1, 2]"}}, False),
    ({"id": "b", "function": {"arguments": "{}"}}, False),
    ({"id": "c", "function": {"name": "no_match", "arguments": ""}}, True),
    ({"function": {"name": "no_match", "arguments": {"reason": "none"}}}, True),
    ("garbage", False),
])
def test_odd_tool_calls_are_parsed_or_marked_invalid(raw, valid):
    body = completion()
    body["choices"][0]["message"]["tool_calls"] = [raw]
    with FakeOpenAI(lambda _: body) as server:
        answer = OpenAICompatibleChat(model="m", base_url=server.base_url).invoke("hi")
    assert isinstance(answer, AIMessage) and len(answer.tool_calls) == int(valid)
    assert len(answer.invalid_tool_calls) == int(not valid)
    assert all(c["id"] for c in answer.tool_calls + answer.invalid_tool_calls)  # ids are made up when missing
