"""OpenAICompatibleChat against a local fake endpoint: the request it sends, tool calls parsed back (bad JSON
arguments kept for the loop to report), the reasoning loop end to end over the nano toolkit, clear errors,
retries of transient failures, and large images downscaled before sending."""
from __future__ import annotations

import base64
import email.utils
import importlib.util
import io
import json
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from PIL import Image

from agents.langchain import glee_tools
from agents import openai_chat
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
    assert {"image", "images", "expression", "expressions"} <= set(refer["properties"])  # one of each pair given
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
        chat = OpenAICompatibleChat(model="m", base_url=closed_port_url(), max_retries=0)
        with pytest.raises(ChatEndpointError, match=message):
            chat.invoke("hi")
        return
    with FakeOpenAI(reply) as server:
        chat = OpenAICompatibleChat(model="m", base_url=server.base_url, api_key="sk-secret", timeout=0.3,
                                    max_retries=0)
        with pytest.raises(ChatEndpointError, match=message) as raised:
            chat.invoke("hi")
    assert "sk-secret" not in str(raised.value)


def recording(chat: OpenAICompatibleChat) -> list[float]:
    """The waits between attempts, recorded instead of slept."""
    waits = []
    chat._sleep = waits.append
    return waits


def test_a_transient_failure_is_retried_after_a_backoff():
    with FakeOpenAI([(503, {"error": {"message": "overloaded"}}), completion("fine")]) as server:
        chat = OpenAICompatibleChat(model="m", base_url=server.base_url, retry_backoff_s=2.0)
        waits = recording(chat)
        assert chat.invoke("hi").content == "fine"
    assert len(server.requests) == 2 and server.requests[0]["body"] == server.requests[1]["body"]
    assert len(waits) == 1 and 1.0 <= waits[0] <= 2.0  # the base delay, with jitter


def test_a_timeout_is_retried():
    def reply(body):
        if len(server.requests) == 1:
            time.sleep(1.0)
        return completion("in time")

    with FakeOpenAI(reply) as server:
        chat = OpenAICompatibleChat(model="m", base_url=server.base_url, timeout=0.3)
        waits = recording(chat)
        assert chat.invoke("hi").content == "in time"
    assert len(server.requests) == 2 and len(waits) == 1


def test_retry_after_is_honoured_up_to_the_cap():
    in_ten_seconds = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=10), usegmt=True)
    limited = {"error": {"message": "Rate limit reached"}}
    with FakeOpenAI([(429, {"Retry-After": "2"}, limited), (429, {"Retry-After": "3600"}, limited),
                     (503, {"Retry-After": in_ten_seconds}, "busy"), (429, {"Retry-After": "soon"}, limited),
                     completion("ok")]) as server:
        chat = OpenAICompatibleChat(model="m", base_url=server.base_url, max_retries=4, retry_backoff_s=0.25)
        waits = recording(chat)
        assert chat.invoke("hi").content == "ok"
    assert waits[:2] == [2.0, openai_chat.MAX_RETRY_WAIT_S] and 8.0 < waits[2] <= 10.0
    assert 1.0 <= waits[3] <= 2.0  # an unreadable Retry-After: the backoff, 0.25 s * 2**3 with jitter
    assert len(server.requests) == 5


@pytest.mark.parametrize("answer, message", [
    ((400, {"error": {"message": "Invalid image_url"}}), "HTTP 400: Invalid image_url$"),
    ((401, {"error": {"message": "Incorrect API key"}}), "HTTP 401: Incorrect API key$"),
    ((403, {"error": {"message": "Forbidden"}}), "HTTP 403: Forbidden$"),
    ((404, {"detail": "Not Found"}), "HTTP 404: Not Found$"),
    ((422, {"detail": "messages: field required"}), "HTTP 422: messages: field required$"),
    ((200, "not json{"), "a body that is not JSON: 'not json{'$"),
])
def test_other_failures_are_not_retried(answer, message):
    with FakeOpenAI([answer, completion("never")]) as server:
        chat = OpenAICompatibleChat(model="m", base_url=server.base_url)
        waits = recording(chat)
        with pytest.raises(ChatEndpointError, match=message):
            chat.invoke("hi")
    assert len(server.requests) == 1 and waits == []


def test_exhausted_retries_report_the_attempts_and_the_last_failure():
    with FakeOpenAI([(502, "bad gateway"), (500, "upstream crashed")]) as server:
        chat = OpenAICompatibleChat(model="m", base_url=server.base_url, max_retries=2)
        waits = recording(chat)
        with pytest.raises(ChatEndpointError,
                           match=r"answered HTTP 500: upstream crashed \(gave up after 3 attempts\)$"):
            chat.invoke("hi")
    assert len(server.requests) == 3
    assert len(waits) == 2 and 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0  # doubling, with jitter
    capped = OpenAICompatibleChat(model="m", base_url=closed_port_url(), max_retries=1, retry_backoff_s=100)
    capped_waits = recording(capped)
    with pytest.raises(ChatEndpointError):
        capped.invoke("hi")
    assert capped_waits == [openai_chat.MAX_RETRY_WAIT_S]


def test_a_refused_connection_is_retried_then_fails():
    chat = OpenAICompatibleChat(model="m", base_url=closed_port_url(), max_retries=2)
    waits = recording(chat)
    with pytest.raises(ChatEndpointError, match=r"the request to http://127\.0\.0\.1:.* failed: .*refused.* "
                                                r"\(gave up after 3 attempts\)$"):
        chat.invoke("hi")
    assert len(waits) == 2


def test_retry_settings_are_checked():
    for bad in ({"max_retries": -1}, {"retry_backoff_s": -0.5}, {"retry_backoff_s": float("inf")},
                {"max_image_side": 0}):
        with pytest.raises(ValueError):
            OpenAICompatibleChat(model="m", base_url="http://localhost:8000/v1", **bad)


def gradient(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    return np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256], axis=-1).astype(np.uint8)


def encoded(pixels: np.ndarray, kind: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def described(url: str) -> tuple[str, str, tuple[int, int]]:
    header, data = url.split(",", 1)
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return header, image.format, image.size


def test_large_data_url_images_are_downscaled_before_sending():
    wide, tall = encoded(gradient(1000, 2000), "PNG"), encoded(gradient(1500, 750), "JPEG")
    small, remote = data_url(gradient(100, 200)), "https://example.com/photo-4000x3000.jpg"
    broken = "data:image/png;base64,bm90IGFuIGltYWdl"  # "not an image": sent as it is, the server judges it
    urls = [wide, tall, small, remote, broken]
    parts = [{"type": "text", "text": "What is this?"},
             *({"type": "image_url", "image_url": {"url": url, "detail": "high"}} for url in urls)]
    message = HumanMessage(content=parts)
    with FakeOpenAI(lambda body: completion("A gradient.")) as server:
        OpenAICompatibleChat(model="m", base_url=server.base_url).invoke([message])
        OpenAICompatibleChat(model="m", base_url=server.base_url, max_image_side=None).invoke([message])
    downscaled, untouched = ([p["image_url"] for p in r["body"]["messages"][0]["content"][1:]]
                             for r in server.requests)
    assert described(downscaled[0]["url"]) == ("data:image/png;base64", "PNG", (1024, 512))
    assert described(downscaled[1]["url"]) == ("data:image/jpeg;base64", "JPEG", (512, 1024))
    assert [p["url"] for p in downscaled[2:]] == [small, remote, broken]  # byte-identical
    assert all(p["detail"] == "high" for p in downscaled) and [p["url"] for p in untouched] == urls
    assert message.content == parts and parts[1]["image_url"]["url"] == wide  # the caller's message is unchanged


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
