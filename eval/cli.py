"""``gleekit eval ...``: benchmark commands (heavy imports happen inside the commands)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Evaluate models on benchmarks.", no_args_is_help=True)


@app.command("shapeworld")
def shapeworld(
    model: str = typer.Option("nano", help="Model folder or bundled name."),
    num_scenes: int = typer.Option(300, min=1, help="Held-out scenes to evaluate."),
    split: str = typer.Option("test", help="Scene split (test is never used in training)."),
    seed: int = typer.Option(0, help="Dataset seed."),
    json_out: Path | None = typer.Option(None, help="Write every number and the settings to this JSON file."),
) -> None:
    """Category detection AP, referring Acc@0.5 and visual-prompt accuracy on fresh shapeworld scenes."""
    from eval.shapeworld import evaluate_shapeworld
    from glee_core.predictor import GleePredictor

    scores = evaluate_shapeworld(GleePredictor.from_pretrained(model), num_scenes=num_scenes, split=split, seed=seed)
    typer.echo(scores.table())
    if json_out is not None:
        json_out.write_text(json.dumps({"model": model, "split": split, "seed": seed, **scores.as_dict()}, indent=1))


@app.command("shapeworld-video")
def shapeworld_video(
    model: str = typer.Option("nano", help="Model folder or bundled name."),
    num_videos: int = typer.Option(20, min=1, help="Held-out videos to evaluate."),
    mode: str = typer.Option("online", help="online or official."),
    score_threshold: float = typer.Option(0.2, help="Per-frame (online) or per-track (official) score threshold "
                                          "(0.2 tracks best with nano: measured 0.1-0.3)."),
    split: str = typer.Option("test", help="Video split (test is never used in training)."),
    seed: int = typer.Option(0, help="Dataset seed."),
    json_out: Path | None = typer.Option(None, help="Write every number and the settings to this JSON file."),
) -> None:
    """Tracking quality (HOTA, IDF1, MOTA, ID switches) on fresh shapeworld videos."""
    from eval.shapeworld_video import evaluate_shapeworld_video
    from glee_core.predictor import GleePredictor

    scores = evaluate_shapeworld_video(GleePredictor.from_pretrained(model), num_videos=num_videos, split=split,
                                       seed=seed, mode=mode, score_threshold=score_threshold)
    typer.echo(scores.table())
    if json_out is not None:
        settings = {"model": model, "split": split, "seed": seed, "mode": mode, "score_threshold": score_threshold}
        json_out.write_text(json.dumps({**settings, **scores.as_dict()}, indent=1))


@app.command("mllm-shapeworld")
def mllm_shapeworld(
    model: str = typer.Option("shapeworld-tiny", help="GleeLLM folder or bundled name."),
    num_scenes: int = typer.Option(50, min=1, help="Held-out test scenes."),
    per_kind: int = typer.Option(2, min=1, help="Questions of each kind per scene."),
    seed: int = typer.Option(2026, help="Test-scene seed."),
    json_out: Path | None = typer.Option(None, help="Write every number and the settings to this JSON file."),
) -> None:
    """Reasoning gIoU/cIoU, referring gIoU/cIoU, exact [SEG] count on two-mask answers and region-caption accuracy
    of a GLEE-LLM on held-out shapeworld scenes (generated answers, no teacher forcing)."""
    from rich.console import Console

    from eval.mllm_shapeworld import evaluate_mllm_shapeworld
    from mllm.io import load_gleellm

    scores = evaluate_mllm_shapeworld(load_gleellm(model), num_scenes=num_scenes, seed=seed, per_kind=per_kind)
    Console().print(scores.table())
    if json_out is not None:
        settings = {"model": model, "num_scenes": num_scenes, "per_kind": per_kind, "seed": seed}
        json_out.write_text(json.dumps({**settings, **scores.as_dict(), "examples": scores.examples}, indent=1))


def register(root: typer.Typer) -> None:
    """Add ``gleekit eval ...`` to the top-level app."""
    root.add_typer(app, name="eval")
