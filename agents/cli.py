"""``gleekit serve``: the MCP server (heavy imports happen inside the command so ``gleekit --help`` stays fast)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class Transport(str, Enum):
    stdio = "stdio"
    streamable_http = "streamable-http"


def serve(
    transport: Transport = typer.Option(Transport.stdio, help="stdio for desktop assistants; streamable-http for a "
                                        "network service."),
    allow_root: list[Path] = typer.Option([], "--allow-root", exists=True, file_okay=False,
                                          help="A folder whose images the tools may read (repeatable). None: "
                                          "no file access, only data: URLs and handles."),
    allow_urls: bool = typer.Option(False, help="Let tools download http(s) images."),
    model: str = typer.Option("nano", help="Model folder or bundled name."),
    host: str = typer.Option("127.0.0.1", help="streamable-http: interface to listen on (the clients of one "
                             "server share its object handles: serve one user)."),
    port: int = typer.Option(8765, min=1, max=65535, help="streamable-http: port."),
    timeout: float = typer.Option(120.0, min=0.1, help="Seconds one tool call may run."),
    max_image_pixels: int = typer.Option(25_000_000, min=1, help="Largest accepted image (width x height)."),
    max_objects: int = typer.Option(100, min=1, help="Most objects returned per image."),
    rejection: Path | None = typer.Option(None, exists=True, dir_okay=False, help="A referring calibration "
                                          "(gleekit eval calibrate-refer on this model): refer then reports "
                                          "'no such object' below its threshold and a match probability."),
) -> None:
    """Serve detect / segment / refer / visual_prompt / track as MCP tools."""
    import logging

    import anyio

    from agents.core import GleeToolkit
    from agents.mcp_server import serve_http, serve_stdio
    from agents.settings import Limits

    logging.basicConfig(level=logging.WARNING, format="gleekit serve: %(levelname)s %(name)s: %(message)s")
    limits = Limits(timeout_s=timeout, max_image_pixels=max_image_pixels, max_objects=max_objects)
    try:
        toolkit = GleeToolkit(model=model, limits=limits, allowed_roots=allow_root, allow_urls=allow_urls,
                              rejection=rejection)
    except (OSError, ValueError) as error:
        typer.echo(f"gleekit serve: cannot start: {error}", err=True)
        raise typer.Exit(2) from None
    if transport is Transport.stdio:
        anyio.run(serve_stdio, toolkit)
    else:
        serve_http(toolkit, host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command()(serve)
