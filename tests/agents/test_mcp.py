"""The MCP server as a real subprocess (``gleekit serve`` over stdio), driven by the official SDK client."""
from __future__ import annotations

import base64
import sys

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def server(root) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "gleekit.cli", "serve", "--allow-root", str(root),
                                                                "--timeout", "60"])


async def test_stdio_server_lists_and_runs_tools_and_survives_bad_calls(image_root):
    async with stdio_client(server(image_root)) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "gleekit"
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert sorted(tools) == ["compare", "crop", "detect", "refer", "refine", "segment", "select", "track", "visual_prompt"]
            assert tools["segment"].input_schema["required"] == ["categories"]
            assert "objects" in tools["segment"].output_schema["$defs"]["ImageResult"]["properties"]  # or grouped

            result = await session.call_tool("segment", {"image": "scene.png", "categories": ["circle", "square"],
                                                         "min_score": 0.0, "max_objects": 4, "overlay": True})
            assert result.is_error is False
            assert [c.type for c in result.content] == ["text", "image"]
            assert base64.b64decode(result.content[1].data)[:4] == b"\x89PNG"
            structured = result.structured_content  # the client checked it against the output schema
            assert len(structured["objects"]) == 4 and structured["objects"][0]["mask"]["size"] == [256, 256]
            assert result.content[0].text == structured["summary"]
            handle = structured["image"]

            bad_calls = [
                ("segment", {"image": "/etc/passwd", "categories": ["a"]}, "bad_argument: path '/etc/passwd'"),
                ("segment", {"image": "scene.png", "categories": "circle"}, "bad_argument: categories"),
                ("detect", {"image": "scene.png", "categories": ["a"], "min_score": "NaN"}, "bad_argument: min_score"),
                ("launch", {}, "bad_argument: unknown tool 'launch'"),
                ("refer", {"image": "img_424242", "expression": "x"}, "not_found: unknown or expired handle"),
            ]
            for name, arguments, message in bad_calls:
                reply = await session.call_tool(name, arguments)
                assert reply.is_error is True and reply.content[0].text.startswith(message), reply.content

            # Still alive, and the handle from the first call is still valid.
            again = await session.call_tool("refer", {"image": handle, "expression": "the circle"})
            assert again.is_error is False and again.structured_content["image"] == handle


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_streamable_http_server_answers_over_http(image_root):
    import subprocess

    import anyio
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "gleekit.cli", "serve", "--transport", "streamable-http",
                                "--port", str(port), "--allow-root", str(image_root)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(240):  # the server imports torch and loads the model first
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
                await stream.aclose()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                await anyio.sleep(0.5)
        async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool("detect", {"image": "scene.png", "categories": ["circle"],
                                                            "min_score": 0.0, "max_objects": 2})
                assert result.is_error is False and len(result.structured_content["objects"]) == 2
                reply = await session.call_tool("detect", {"image": "../x.png", "categories": ["circle"]})
                assert reply.is_error is True and "'..' is not allowed" in reply.content[0].text
    finally:
        process.terminate()
        process.wait(timeout=30)
