"""The ``gleekit`` command, assembled from each package's own typer app."""
from __future__ import annotations

import typer

from agents.cli import register as register_agents
from eval.cli import register as register_eval
from glee_core.cli import register as register_glee_core
from mllm.cli import register as register_mllm
from gleekit.demo import demo
from train.cli import register as register_train

app = typer.Typer(help="gleekit: GLEE object detection, segmentation, grounding and tracking.", no_args_is_help=True)
register_glee_core(app)
register_train(app)
register_eval(app)
register_mllm(app)
register_agents(app)
app.command()(demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
