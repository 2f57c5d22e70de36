"""A langchain-core chat model for any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama, …).

``OpenAICompatibleChat`` sends the messages (system; user, with text and ``image_url`` parts; assistant, with its
tool calls; tool results) and the tools given to ``bind_tools`` (converted with langchain-core's
``convert_to_openai_tool``), and turns the reply into an ``AIMessage``. Tool calls whose arguments are not a
JSON object come back as ``invalid_tool_calls`` with the raw text, so a loop can tell the model what was wrong;
they are sent back to the endpoint as the model wrote them. Every failure of the endpoint — unreachable, too
slow, an HTTP error, a body without ``choices`` — raises :class:`ChatEndpointError` with the server's message.

Example::

    chat = OpenAICompatibleChat(model="qwen2.5-vl", base_url="http://localhost:8000/v1")  # a vLLM server
    chat.bind_tools(tools).invoke("Which shapes are red?")
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import InvalidToolCall, ToolCall, invalid_tool_call, tool_call
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils import from_env, secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, SecretStr, field_validator

OPENAI_BASE_URL = "https://api.openai.com/v1"
ERROR_CHARS = 300


class ChatEndpointError(ConnectionError):
    """The chat endpoint could not be reached, timed out, refused the request or answered malformed."""


class OpenAICompatibleChat(BaseChatModel):
    """Chat completions over HTTP; ``api_key`` defaults to ``$OPENAI_API_KEY`` (none sent when unset, as local
    servers expect), ``base_url`` to ``$OPENAI_BASE_URL`` or OpenAI's. ``max_tokens`` and ``temperature`` are
    sent only when set."""

    model: str
    base_url: str = Field(default_factory=from_env("OPENAI_BASE_URL", default=OPENAI_BASE_URL), validate_default=True)
    api_key: SecretStr | None = Field(default_factory=secret_from_env("OPENAI_API_KEY", default=None))
    timeout: float = Field(120.0, gt=0)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as {OPENAI_BASE_URL}, got {url!r}")
        return url.rstrip("/")

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        """Send ``tools`` (langchain tools, pydantic models, functions or OpenAI tool dicts) with every request;
        other keyword arguments (``tool_choice``, ``parallel_tool_calls``) go into the request as they are."""
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        options = {"max_tokens": self.max_tokens, "temperature": self.temperature, "stop": stop}
        payload = {"model": self.model, "messages": [_message_dict(m) for m in messages],
                   **{k: v for k, v in options.items() if v is not None}, **kwargs}
        choice = self._post(payload)
        reply = choice["message"]
        calls = [_parse_tool_call(raw) for raw in reply.get("tool_calls") or []]
        message = AIMessage(content=reply.get("content") or "",
                            tool_calls=[c for c in calls if c["type"] == "tool_call"],
                            invalid_tool_calls=[c for c in calls if c["type"] == "invalid_tool_call"],
                            response_metadata={"model_name": self.model, "finish_reason": choice.get("finish_reason")})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The first choice of the endpoint's answer (``ChatEndpointError`` on any failure)."""
        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key.get_secret_value()}"} if self.api_key else {}
        try:
            response = httpx.post(url, json=payload, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException:
            raise ChatEndpointError(f"{url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as error:
            raise ChatEndpointError(f"the request to {url} failed: {error}") from None
        if response.is_error:
            raise ChatEndpointError(f"{url} answered HTTP {response.status_code}: {_server_message(response)}")
        try:
            body = response.json()
        except ValueError:
            raise ChatEndpointError(f"{url} answered with a body that is not JSON: "
                                    f"{response.text[:ERROR_CHARS]!r}") from None
        choices = body.get("choices") if isinstance(body, dict) else None
        if not (choices and isinstance(choices, list) and isinstance(choices[0], dict)
                and isinstance(choices[0].get("message"), dict)):
            raise ChatEndpointError(f"{url} answered without choices[0].message: {str(body)[:ERROR_CHARS]}")
        return choices[0]


def _message_dict(message: BaseMessage) -> dict[str, Any]:
    """One message in the chat-completions format; an AI message's invalid tool calls are sent as written, so
    every tool result that answers them has its call."""
    entry = convert_to_openai_messages(message)
    if isinstance(message, AIMessage) and message.invalid_tool_calls:
        entry.setdefault("tool_calls", []).extend(
            {"type": "function", "id": c["id"], "function": {"name": c["name"] or "", "arguments": c["args"] or ""}}
            for c in message.invalid_tool_calls)
    return entry


def _parse_tool_call(raw: Any) -> ToolCall | InvalidToolCall:
    """A ``tool_calls`` entry of the reply; arguments that are not a JSON object make it invalid (raw text kept).
    A call without an id gets one, so its result can answer it."""
    raw = raw if isinstance(raw, dict) else {}
    function = raw.get("function") if isinstance(raw.get("function"), dict) else {}
    name = function.get("name") if isinstance(function.get("name"), str) else None
    arguments = function.get("arguments")
    call_id = str(raw.get("id") or f"call_{uuid.uuid4().hex[:16]}")
    if isinstance(arguments, str) and arguments.strip():
        try:
            parsed = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError) as error:
            return invalid_tool_call(name=name, args=arguments, id=call_id, error=f"invalid JSON: {error}")
    elif arguments is None or isinstance(arguments, str):  # a call without arguments
        parsed, arguments = {}, "{}"
    else:  # some servers send the arguments object itself
        parsed, arguments = arguments, json.dumps(arguments)
    if name is None or not isinstance(parsed, dict):
        return invalid_tool_call(name=name, args=arguments, id=call_id,
                                 error="a tool call needs a function name and a JSON object of arguments")
    return tool_call(name=name, args=parsed, id=call_id)


def _server_message(response: httpx.Response) -> str:
    """The error text of a failed request: OpenAI's ``{"error": {"message"}}``, other servers' ``error`` /
    ``detail`` / ``message``, else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:ERROR_CHARS] or response.reason_phrase
    if isinstance(body, dict):
        body = next((body[k] for k in ("error", "detail", "message") if body.get(k)), body)
    if isinstance(body, dict):
        body = body.get("message") or body
    return str(body)[:ERROR_CHARS]
