"""gleekit's tools as an MCP server, on the official ``mcp`` SDK (2.x, low-level ``Server``).

Tools are listed with the core's JSON schemas (input and output). A call answers with a text summary,
the overlay PNGs as image content when asked for (one per image result), and the full result as structured content. Every
failure — unknown tool, malformed arguments, a file outside the allowed folders, a timeout, a crash —
is a result with ``is_error=True`` and the typed error text, never a protocol error or a dead server.

Run it with ``gleekit serve`` (stdio by default; ``--transport streamable-http`` for HTTP). One server is one
toolkit: its handles are shared by every client (MCP requests carry no lasting session to separate them by), so
an HTTP server is for one user; it listens on 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import base64
import logging
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

from agents.core import GleeToolkit

SERVER_NAME = "gleekit"
INSTRUCTIONS = ("Object detection, segmentation, referring grounding and tracking with GLEE. Boxes are "
                "[x1, y1, x2, y2] in pixels; masks are COCO RLE; results name images and objects by "
                "handles (img_1, obj_3) that later calls accept (refine, crop, compare, track, select). A crop "
                "is a new image with its own pixel coordinates.")

logger = logging.getLogger("gleekit.agents")


def build_server(toolkit: GleeToolkit) -> Server:
    """An MCP ``Server`` whose tools are ``toolkit``'s operations."""
    from gleekit import __version__

    tools = [
        types.Tool(name=spec.name, description=spec.description, input_schema=spec.args_model.model_json_schema(),
                   output_schema=spec.output_schema(),
                   annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=toolkit.access.allow_urls))
        for spec in toolkit.specs.values()
    ]

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        outcome = await anyio.to_thread.run_sync(toolkit.call, params.name, params.arguments)
        content: list[Any] = [types.TextContent(text=outcome.text)]
        if not outcome.ok:
            return types.CallToolResult(content=content, is_error=True)
        content += [types.ImageContent(data=base64.b64encode(png).decode("ascii"), mime_type="image/png")
                    for png in outcome.overlays]  # in the order of the result (and of a grouped one's results)
        return types.CallToolResult(content=content, structured_content=outcome.structured())

    return Server(SERVER_NAME, version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(toolkit: GleeToolkit) -> None:
    """Serve over this process's stdin/stdout until the client closes them."""
    from mcp.server.stdio import stdio_server

    server = build_server(toolkit)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve_http(toolkit: GleeToolkit, host: str = "127.0.0.1", port: int = 8765, path: str = "/mcp") -> None:
    """Serve streamable HTTP at ``http://host:port/path`` (uvicorn) until interrupted."""
    import uvicorn

    app = build_server(toolkit).streamable_http_app(streamable_http_path=path, host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
