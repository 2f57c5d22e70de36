"""The ``gleekit`` command, assembled from each package's own typer app."""
from __future__ import annotations

import typer

from glee_core.cli import register as register_glee_core

app = typer.Typer(help="gleekit: GLEE object detection, segmentation, grounding and tracking.", no_args_is_help=True)
register_glee_core(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
