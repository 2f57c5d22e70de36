"""``gleekit predict`` / ``track`` / ``convert`` / ``parity`` / ``export onnx`` / ``vocab encode``: the glee_core
commands.

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


def _prompt(categories: str | None, expression: str | None, box: str | None = None, point: str | None = None,
            caption: str | None = None, vocabulary: Path | None = None) -> Prompt:
    """The one prompt the options give (a usage error unless exactly one is given)."""
    from glee_core.structures import Caption, Categories, Expression, VisualPrompt
    from glee_core.vocabulary import Vocabulary

    given = [p for p in (categories, expression, box, point, caption, vocabulary) if p is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --categories, --expression, --box, --point, --caption, "
                                 "--vocabulary")
    if categories is not None:
        return Categories([c.strip() for c in categories.split(",")])
    if expression is not None:
        return Expression(expression)
    if caption is not None:
        return Caption(caption)
    if vocabulary is not None:
        return Vocabulary.load(vocabulary)
    if box is not None:
        return VisualPrompt(boxes=[_parse_floats(box, 4, "--box")])
    return VisualPrompt(points=[_parse_floats(point, 2, "--point")])


def predict(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="Image file (PNG, JPEG, ...)."),
    categories: Optional[str] = typer.Option(None, help='Comma-separated category names, e.g. "cat,dog".'),
    expression: Optional[str] = typer.Option(None, help="A referring expression."),
    box: Optional[str] = typer.Option(None, help="Box prompt x1,y1,x2,y2 in pixels."),
    point: Optional[str] = typer.Option(None, help="Point prompt x,y in pixels."),
    caption: Optional[str] = typer.Option(None, help="A sentence whose noun phrases are grounded, e.g. "
                                                     '"a red circle next to two blue squares".'),
    vocabulary: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                              help="An encoded or tuned vocabulary file (gleekit vocab encode, "
                                                         "gleekit tune-vocab)."),
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
        prompt = _prompt(categories, expression, box, point, caption, vocabulary)
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
        label = dets.label_names[int(dets.labels[i])]
        if caption is not None:
            start, end = prompt.spans[int(dets.labels[i])]
            label = f"{label} [{start}:{end}]"
        table.add_row(str(i), label, f"{dets.scores[i]:.3f}", ", ".join(f"{v:.1f}" for v in dets.boxes[i]))
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
    continue_threshold: Optional[float] = typer.Option(None, help="Online: a live track may also continue with a "
                                                                   "detection scoring down to this (it never "
                                                                   "starts a track); default: off."),
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
        prompt = _prompt(categories, expression)
        predictor = GleePredictor.from_pretrained(model, preset=preset, device=device)
        if mode == "online":
            per_frame = []
            for detections in predictor.stream(frames(), prompt, score_threshold=score_threshold,
                                               continue_threshold=continue_threshold):
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


def export_onnx(
    model: str = typer.Option("nano", help="Model folder, bundled model name (nano), or official checkpoint file "
                                           "(with --preset)."),
    preset: Optional[str] = typer.Option(None, help="Architecture preset when --model is an official .pth."),
    out: Path = typer.Option(Path("glee.onnx"), help="The .onnx file to write; its sidecar is <out>.json."),
    height: Optional[int] = typer.Option(None, help="Fixed padded input height in pixels, a multiple of 32 "
                                                    "(default: the model's long-side cap)."),
    width: Optional[int] = typer.Option(None, help="Fixed padded input width in pixels, a multiple of 32 "
                                                   "(default: the model's long-side cap)."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset, >= 16 (default 17)."),
    verify: bool = typer.Option(True, help="Run the file in onnxruntime on a random input and compare with "
                                           "PyTorch (fails above 1e-3)."),
) -> None:
    """Export the image path (category prompts; text embeddings are inputs) to ONNX for onnxruntime."""
    from glee_core.modeling.glee import GleeModel
    from glee_core.onnx_export import DEFAULT_OPSET, OnnxGlee, export_onnx as export, max_abs_errors, sidecar_path

    try:
        glee = GleeModel.from_pretrained(model, preset=preset)
        export(glee, out, height=height, width=width, opset=opset or DEFAULT_OPSET)
        runner = OnnxGlee(out) if verify else None
    except (ValueError, ImportError) as exc:
        _fail(exc)
    sidecar = sidecar_path(out)
    height, width = json.loads(sidecar.read_text())["image_size"]
    typer.echo(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {height}x{width} input) and {sidecar}")
    if runner is not None:
        errors = max_abs_errors(glee, runner, glee.encode_vocabulary(["person", "car", "traffic light"]))
        typer.echo("max |onnxruntime - PyTorch|: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
        if max(errors.values()) > 1e-3:
            _fail(ValueError("the ONNX outputs differ from PyTorch's by more than 1e-3"))


def vocab_encode(
    names: str = typer.Argument(..., help='Comma-separated names, or @FILE with one name per line.'),
    model: str = typer.Option("nano", help="Model folder, bundled model name (nano), or official checkpoint file "
                                           "(with --preset)."),
    preset: Optional[str] = typer.Option(None, help="Architecture preset when --model is an official .pth."),
    out: Path = typer.Option(Path("vocabulary.safetensors"), help="The vocabulary file to write."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda:0."),
) -> None:
    """Encode a category list once (e.g. LVIS's 1,203 names) into a file for --vocabulary; it runs only on the
    model that wrote it."""
    import torch

    from glee_core.modeling.glee import GleeModel
    from glee_core.structures import Categories

    try:
        if names.startswith("@"):
            listed = [line.strip() for line in Path(names[1:]).read_text().splitlines() if line.strip()]
        else:
            listed = [n.strip() for n in names.split(",")]
        categories = Categories(listed)
        glee = GleeModel.from_pretrained(model, preset=preset, device=device).eval()
        with torch.no_grad():
            vocab = glee.encode_vocabulary(categories.names)
    except (ValueError, OSError) as exc:
        _fail(exc)
    vocab.save(out)
    typer.echo(f"wrote {out}: {len(vocab)} names, {vocab.fusion_tokens.shape[0]} tokens, "
               f"text tower {vocab.fingerprint[:12]}")


def register(app: typer.Typer) -> None:
    """Add the glee_core commands to the top-level ``gleekit`` app."""
    app.command()(predict)
    app.command()(track)
    app.command()(convert)
    app.command()(parity)
    export_app = typer.Typer(help="Export a model for other runtimes.", no_args_is_help=True)
    export_app.command("onnx")(export_onnx)
    app.add_typer(export_app, name="export")
    vocab_app = typer.Typer(help="Encoded category vocabularies.", no_args_is_help=True)
    vocab_app.command("encode")(vocab_encode)
    app.add_typer(vocab_app, name="vocab")
