"""``gleekit predict`` / ``track`` / ``convert`` / ``parity``: the glee_core commands.

Heavy imports (torch, the model) happen inside the commands so that ``gleekit --help`` is fast.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer

if TYPE_CHECKING:
    from glee_core.predictor import Prompt


def _parse_floats(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{what} must be {count} comma-separated numbers, got {text!r}") from None
    if len(values) != count:
        raise typer.BadParameter(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def _fail(exc: Exception) -> NoReturn:
    """End a command with a one-line error: a bad checkpoint, preset, prompt or image is user input, not a crash."""
    typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


def _prompt(categories: str | None, expression: str | None, box: str | None, point: str | None) -> Prompt:
    """The one prompt the options give (a usage error unless exactly one is given)."""
    from glee_core.structures import Categories, Expression, VisualPrompt

    given = [p for p in (categories, expression, box, point) if p is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --categories, --expression, --box, --point")
    if categories is not None:
        return Categories([c.strip() for c in categories.split(",")])
    if expression is not None:
        return Expression(expression)
    if box is not None:
        return VisualPrompt(boxes=[_parse_floats(box, 4, "--box")])
    return VisualPrompt(points=[_parse_floats(point, 2, "--point")])


def predict(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="Image file (PNG, JPEG, ...)."),
    categories: Optional[str] = typer.Option(None, help='Comma-separated category names, e.g. "cat,dog".'),
    expression: Optional[str] = typer.Option(None, help="A referring expression."),
    box: Optional[str] = typer.Option(None, help="Box prompt x1,y1,x2,y2 in pixels."),
    point: Optional[str] = typer.Option(None, help="Point prompt x,y in pixels."),
    model: str = typer.Option("nano", help="Model folder (gleekit convert), bundled model name (nano), or official "
                                           "checkpoint file (with --preset)."),
    preset: Optional[str] = typer.Option(None, help="Architecture preset when --model is an official .pth."),
    out: Path = typer.Option(Path("gleekit-out"), help="Output folder for the JSON and overlay PNG."),
    score_threshold: float = typer.Option(0.0, help="Drop detections scoring below this."),
    topk: int = typer.Option(100, help="Keep at most this many detections."),
    nms: Optional[float] = typer.Option(None, help="Class-agnostic NMS IoU threshold (off by default)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda:0."),
) -> None:
    """Detect / segment / ground objects in one image; writes <out>/<image>.json and an overlay PNG."""
    from rich.console import Console
    from rich.table import Table

    from glee_core.predictor import GleePredictor
    from glee_core.visualize import save_overlay

    try:
        prompt = _prompt(categories, expression, box, point)
        predictor = GleePredictor.from_pretrained(model, preset=preset, device=device)
        image_array = predictor.load_image(image)
        dets = predictor.predict(image_array, prompt, score_threshold=score_threshold, topk=topk, nms_iou=nms)
    except ValueError as exc:
        _fail(exc)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{image.stem}.json"
    json_path.write_text(json.dumps(dets.to_json_dict(), indent=1))
    png_path = out / f"{image.stem}_overlay.png"
    save_overlay(png_path, image_array, dets)

    table = Table(title=f"{len(dets)} detections in {image.name}")
    for column in ("#", "label", "score", "box x1,y1,x2,y2"):
        table.add_column(column)
    for i in range(min(len(dets), 20)):
        table.add_row(str(i), dets.label_names[int(dets.labels[i])], f"{dets.scores[i]:.3f}",
                      ", ".join(f"{v:.1f}" for v in dets.boxes[i]))
    Console().print(table)
    typer.echo(f"wrote {json_path} and {png_path}")


def track(
    video: Path = typer.Argument(..., exists=True, help="A folder of frame images or a video file."),
    categories: Optional[str] = typer.Option(None, help='Comma-separated category names, e.g. "cat,dog".'),
    expression: Optional[str] = typer.Option(None, help="A referring expression: the one object to follow."),
    mode: str = typer.Option("online", help="online (frame by frame, bounded memory) or official (GLEE's clip "
                                            "inference)."),
    model: str = typer.Option("nano", help="Model folder, bundled model name (nano), or official checkpoint file "
                                           "(with --preset)."),
    preset: Optional[str] = typer.Option(None, help="Architecture preset when --model is an official .pth."),
    out: Path = typer.Option(Path("gleekit-track"), help="Output folder."),
    score_threshold: float = typer.Option(0.3, help="Drop detections (online) or tracks (official) below this."),
    max_frames: int = typer.Option(2000, min=1, help="Refuse longer videos."),
    fps: float = typer.Option(10.0, help="Frame rate of the overlay GIF."),
    gif: bool = typer.Option(True, help="Write overlay.gif (keeps the frames in memory)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda:0."),
) -> None:
    """Track objects through a video; writes tracks.json, ytvis_results.json, mot.txt and overlay.gif to --out."""
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from glee_core.predictor import GleePredictor
    from glee_core.structures import Tracks
    from glee_core.video_io import iter_frames
    from glee_core.visualize import save_tracks_gif

    if (categories is None) == (expression is None):
        raise typer.BadParameter("give exactly one of --categories and --expression")
    if mode not in ("online", "official"):
        raise typer.BadParameter(f"--mode must be online or official, got {mode!r}")
    if not fps > 0:
        raise typer.BadParameter(f"--fps must be positive, got {fps}")
    kept: list = []

    def frames():
        for frame in iter_frames(video, max_frames):
            if gif:
                kept.append(frame)
            yield frame

    bar = tqdm(desc=f"tracking ({mode})", unit="frame")
    try:
        prompt = _prompt(categories, expression, None, None)
        predictor = GleePredictor.from_pretrained(model, preset=preset, device=device)
        if mode == "online":
            per_frame = []
            for detections in predictor.stream(frames(), prompt, score_threshold=score_threshold):
                per_frame.append(detections)
                bar.update()
            tracks = Tracks(per_frame)
        else:
            tracks = predictor.track(frames(), prompt, mode="official", score_threshold=score_threshold,
                                     on_frame=lambda start: bar.update(start - bar.n))
            bar.update(len(tracks) - bar.n)
    except ValueError as exc:
        _fail(exc)
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracks.json").write_text(json.dumps(tracks.to_json_dict()))
    (out / "ytvis_results.json").write_text(json.dumps(tracks.to_ytvis(video_id=1)))
    (out / "mot.txt").write_text(tracks.to_mot())
    written = ["tracks.json", "ytvis_results.json", "mot.txt"]
    if gif:
        save_tracks_gif(out / "overlay.gif", kept, tracks, fps=fps)
        written.append("overlay.gif")
    table = Table(title=f"{len(tracks.track_ids)} tracks over {len(tracks)} frames of {video.name}")
    for column in ("id", "label", "frames", "seen in", "mean score"):
        table.add_column(column)
    for summary in tracks.track_summary()[:30]:
        table.add_row(str(summary.track_id), summary.label_name, f"{summary.frames[0]}-{summary.frames[-1]}",
                      str(len(summary.frames)), f"{summary.mean_score:.3f}")
    Console().print(table)
    typer.echo(f"wrote {', '.join(written)} to {out}")


def convert(
    checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False,
                                      help="Official GLEE checkpoint (.pth or .safetensors)."),
    out_dir: Path = typer.Argument(..., help="Folder to write config.json + model.safetensors into."),
    preset: str = typer.Option(..., help="Architecture: lite-r50, plus-swinl or pro-eva02l."),
    strict: bool = typer.Option(True, help="Fail if any weight is missing or unexpected."),
) -> None:
    """Convert an official GLEE checkpoint into gleekit's folder format."""
    from glee_core.modeling.glee import GleeModel

    try:
        model = GleeModel.from_pretrained(str(checkpoint), preset=preset, strict=strict)
    except ValueError as exc:
        _fail(exc)
    model.save_pretrained(out_dir)
    typer.echo(f"converted {checkpoint} ({model.load_report.summary()}) -> {out_dir}")


def parity(
    weights: Path = typer.Argument(..., help="Weights with official names (.safetensors or .pth)."),
    cases_dir: Path = typer.Argument(..., help="Folder of fixture case directories."),
) -> None:
    """Compare the model against official-code fixtures (same as python -m glee_core.parity)."""
    from glee_core.parity import run_parity

    raise typer.Exit(run_parity(weights, cases_dir))


def register(app: typer.Typer) -> None:
    """Add the glee_core commands to the top-level ``gleekit`` app."""
    app.command()(predict)
    app.command()(track)
    app.command()(convert)
    app.command()(parity)
