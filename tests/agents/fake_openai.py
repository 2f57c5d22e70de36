"""A fake OpenAI-compatible endpoint for tests, and a scripted model for the reasoning loop behind it.

``FakeOpenAI(reply)`` serves ``POST /v1/chat/completions`` on 127.0.0.1 (a free port) from a thread; ``reply``
maps each request's JSON body to an answer: a response body (HTTP 200), ``(status, body)`` or ``(status, headers,
body)`` (a dict body is sent as JSON, a string as it is). ``reply`` may also be a list of answers, served in
order, the last one again for every later request. Every request is kept in ``requests`` as ``{"path",
"headers", "body"}``.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], Any]  # a response body, (status, body) or (status, headers, body)


class FakeOpenAI:
    """Use as a context manager; ``base_url`` is ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, reply: Reply | list[Any]):
        self.reply = _scripted(reply) if isinstance(reply, list) else reply
        self.requests: list[dict[str, Any]] = []
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> "FakeOpenAI":
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _scripted(answers: list[Any]) -> Reply:
    """A reply that gives ``answers`` in order, then the last one for ever."""
    remaining = list(answers)
    lock = threading.Lock()

    def reply(body: dict[str, Any]) -> Any:
        with lock:
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return reply


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) is not an error here."""


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            answer = fake.reply(body)
            answer = answer if isinstance(answer, tuple) else (200, answer)
            status, headers, content = answer if len(answer) == 3 else (answer[0], {}, answer[1])
            data = (json.dumps(content) if isinstance(content, dict) else content).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(content, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def completion(content: str = "", calls: list[tuple[str, dict[str, Any] | str, str]] = ()) -> dict[str, Any]:
    """A chat-completions response: ``content`` and tool calls ``(name, arguments (an object or raw text), id)``."""
    tool_calls = [{"id": call_id, "type": "function",
                   "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                  for name, args, call_id in calls]
    message = {"role": "assistant", "content": content or None, **({"tool_calls": tool_calls} if tool_calls else {})}
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}]}


def turns(body: dict[str, Any]) -> int:
    """How many replies the model has given in this conversation."""
    return sum(m["role"] == "assistant" for m in body["messages"])


def loop_reply(body: dict[str, Any], finish: str = "select") -> dict[str, Any]:
    """A model in ``reason_segment``'s loop: segment the image (at least one object), then select the object
    numbered 1 on the overlay (``finish="select"``) or call no_match."""
    messages = body["messages"]
    image = re.search(r"img_\d+", messages[1]["content"][0]["text"]).group()
    if turns(body) == 0:
        return completion(calls=[("segment", {"image": image, "categories": ["shape"], "min_score": 0.0,
                                              "max_objects": 2}, "call_1")])
    if finish == "no_match":
        return completion(calls=[("no_match", {"reason": "nothing answers the question"}, "call_2")])
    first = re.search(r"1 = (obj_\d+)", messages[-1]["content"][0]["text"]).group(1)
    return completion("Number 1.", [("select", {"image": image, "ids": [first]}, "call_2")])
