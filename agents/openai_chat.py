"""A langchain-core chat model for any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama, …).

``OpenAICompatibleChat`` sends the messages (system; user, with text and ``image_url`` parts; assistant, with its
tool calls; tool results) and the tools given to ``bind_tools`` (converted with langchain-core's
``convert_to_openai_tool``), and turns the reply into an ``AIMessage``. Tool calls whose arguments are not a
JSON object come back as ``invalid_tool_calls`` with the raw text, so a loop can tell the model what was wrong;
they are sent back to the endpoint as the model wrote them. Every failure of the endpoint — unreachable, too
slow, an HTTP error, a body without ``choices`` — raises :class:`ChatEndpointError` with the server's message.

Transient failures (HTTP 429, 500, 502, 503, 504, a refused or dropped connection, a timeout) are retried up to
``max_retries`` times, waiting ``retry_backoff_s * 2**n`` seconds with jitter, or what the server's
``Retry-After`` asks, never more than ``MAX_RETRY_WAIT_S``; other errors fail at once. Images sent as PNG or JPEG
``data:`` URLs are downscaled to ``max_image_side`` on their long side first (remote models charge and resize
by the pixel); ``http(s)`` URLs, other formats and data that does not decode are sent as they are.

Example::

    chat = OpenAICompatibleChat(model="qwen2.5-vl", base_url="http://localhost:8000/v1")  # a vLLM server
    chat.bind_tools(tools).invoke("Which shapes are red?")
"""
from __future__ import annotations

import base64
import email.utils
import io
import json
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import InvalidToolCall, ToolCall, invalid_tool_call, tool_call
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils import from_env, secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from PIL import ExifTags, Image, ImageOps
from pydantic import Field, PrivateAttr, SecretStr, field_validator

OPENAI_BASE_URL = "https://api.openai.com/v1"
ERROR_CHARS = 300
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_WAIT_S = 30.0  # the longest wait between two attempts, whatever the backoff or Retry-After says
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
IMAGE_DATA_URL = re.compile(r"data:image/(png|jpe?g);base64,(.*)", re.IGNORECASE | re.DOTALL)
JPEG_QUALITY = 90


class ChatEndpointError(ConnectionError):
    """The chat endpoint could not be reached, timed out, refused the request or answered malformed."""


class OpenAICompatibleChat(BaseChatModel):
    """Chat completions over HTTP; ``api_key`` defaults to ``$OPENAI_API_KEY`` (none sent when unset, as local
    servers expect), ``base_url`` to ``$OPENAI_BASE_URL`` or OpenAI's. ``max_tokens`` and ``temperature`` are
    sent only when set. ``max_retries`` transient failures are retried (``0``: none) after ``retry_backoff_s``,
    doubling each time; ``max_image_side`` bounds the long side of ``data:`` URL images (``None``: sent as
    given). ``timeout`` is per attempt."""

    model: str
    base_url: str = Field(default_factory=from_env("OPENAI_BASE_URL", default=OPENAI_BASE_URL), validate_default=True)
    api_key: SecretStr | None = Field(default_factory=secret_from_env("OPENAI_API_KEY", default=None))
    timeout: float = Field(120.0, gt=0)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    max_retries: int = Field(3, ge=0)
    retry_backoff_s: float = Field(1.0, ge=0, allow_inf_nan=False)
    max_image_side: int | None = Field(1024, ge=1)
    _sleep: Callable[[float], Any] = PrivateAttr(default=time.sleep)  # tests record the waits instead

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
        payload = {"model": self.model, "messages": [_message_dict(m, self.max_image_side) for m in messages],
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
        """The first choice of the endpoint's answer, retrying transient failures (``ChatEndpointError`` when
        they persist, or at once on any other failure)."""
        url = f"{self.base_url}/chat/completions"
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            response, failure, retry_after = self._attempt(url, payload)
            if failure is None:
                return _first_choice(url, response)
            if attempt < attempts:
                backoff = self.retry_backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                self._sleep(min(MAX_RETRY_WAIT_S, backoff if retry_after is None else retry_after))
        raise ChatEndpointError(failure + (f" (gave up after {attempts} attempts)" if attempts > 1 else ""))

    def _attempt(self, url: str, payload: dict[str, Any]) -> tuple[httpx.Response | None, str | None, float | None]:
        """One request: ``(response, None, None)`` when it may be read, or ``(None, why, Retry-After seconds)``
        for a transient failure; other failures raise ``ChatEndpointError``."""
        headers = {"Authorization": f"Bearer {self.api_key.get_secret_value()}"} if self.api_key else {}
        try:
            response = httpx.post(url, json=payload, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException:
            return None, f"{url} did not answer within {self.timeout:g} s", None
        except RETRY_ERRORS as error:
            return None, f"the request to {url} failed: {error}", None
        except httpx.HTTPError as error:
            raise ChatEndpointError(f"the request to {url} failed: {error}") from None
        if not response.is_error:
            return response, None, None
        failure = f"{url} answered HTTP {response.status_code}: {_server_message(response)}"
        if response.status_code not in RETRY_STATUSES:
            raise ChatEndpointError(failure)
        return None, failure, _retry_after(response)


def _first_choice(url: str, response: httpx.Response) -> dict[str, Any]:
    """``choices[0]`` of a successful answer (``ChatEndpointError`` when the body is not that)."""
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


def _retry_after(response: httpx.Response) -> float | None:
    """The wait a 429 / 503 asks for, in seconds: ``retry-after-ms`` (OpenAI), ``Retry-After`` as seconds or
    as an HTTP date; ``None`` when absent or unreadable."""
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            value = headers["retry-after"].strip()
            try:
                seconds = float(value)
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
                seconds = (when - datetime.now(timezone.utc)).total_seconds()
        else:
            return None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _message_dict(message: BaseMessage, max_image_side: int | None = None) -> dict[str, Any]:
    """One message in the chat-completions format, its ``data:`` URL images downscaled to ``max_image_side``;
    an AI message's invalid tool calls are sent as written, so every tool result that answers them has its
    call."""
    entry = convert_to_openai_messages(message)
    if max_image_side is not None and isinstance(entry.get("content"), list):
        entry["content"] = [_downscaled_part(part, max_image_side) for part in entry["content"]]
    if isinstance(message, AIMessage) and message.invalid_tool_calls:
        entry.setdefault("tool_calls", []).extend(
            {"type": "function", "id": c["id"], "function": {"name": c["name"] or "", "arguments": c["args"] or ""}}
            for c in message.invalid_tool_calls)
    return entry


def _downscaled_part(part: Any, max_side: int) -> Any:
    """A content part, with a copy of its image downscaled when it is an ``image_url`` part that needs it."""
    if not (isinstance(part, dict) and part.get("type") == "image_url" and isinstance(part.get("image_url"), dict)
            and isinstance(part["image_url"].get("url"), str)):
        return part
    url = _downscaled_data_url(part["image_url"]["url"], max_side)
    return part if url is part["image_url"]["url"] else {**part, "image_url": {**part["image_url"], "url": url}}


def _downscaled_data_url(url: str, max_side: int) -> str:
    """A PNG / JPEG ``data:`` URL whose image is longer than ``max_side`` pixels, re-encoded in its format at
    that long side (aspect kept, LANCZOS, EXIF orientation applied); any other URL, a small image, or data that
    does not decode comes back as the same string, and the endpoint judges it."""
    match = IMAGE_DATA_URL.fullmatch(url) if url[:5].lower() == "data:" else None
    if match is None:
        return url
    try:
        with Image.open(io.BytesIO(base64.b64decode(match.group(2)))) as image:
            if image.format not in ("PNG", "JPEG") or max(image.size) <= max_side:
                return url
            kind, icc = image.format, image.info.get("icc_profile")
            scale = max_side / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            if kind == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale where that still covers the target: much faster
                image.draft(image.mode, size)
            if image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):  # turned a quarter
                size = size[::-1]
            image = ImageOps.exif_transpose(image)
            if image.mode == "P":  # a palette or bilevel image resizes only with NEAREST
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode == "1":
                image = image.convert("L")
            small = image.resize(size, Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            options = {"quality": JPEG_QUALITY} if kind == "JPEG" else {}
            small.save(buffer, format=kind, **options, **({"icc_profile": icc} if icc else {}))
    except Exception:  # not an image Pillow can read and resize (bad base64, truncated, a bomb, an odd mode)
        return url
    mime = "image/png" if kind == "PNG" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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
