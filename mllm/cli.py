"""``gleekit ask IMAGE "question"``: answer with text, one mask per ``[SEG]`` and the objects the answer cites."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mllm import DEFAULT_MODEL


def ask(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="Image file (PNG, JPEG, ...)."),
    question: str = typer.Argument(..., help='The question, e.g. "Which shape could roll? Please output '
                                             'segmentation mask." Cite objects as <obj3>.'),
    model: str = typer.Option(DEFAULT_MODEL, help="GleeLLM folder or bundled name."),
    out: Path = typer.Option(Path("gleekit-out"), help="Output folder for the answer JSON and overlay PNGs."),
    bits: Optional[int] = typer.Option(None, help="Load the LLM in 4 or 8 bits (bitsandbytes)."),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="Generation length limit."),
    mask_source: Optional[str] = typer.Option(None, help="Where [SEG] masks come from: glee (GLEE prompted with the "
                                                         "[SEG]) or pointer (the pointed object token's mask); "
                                                         "default: the model's setting."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda:0."),
) -> None:
    """Ask a GLEE-LLM about an image; prints the answer, writes <out>/<image>_answer.json and overlays."""
    from rich.console import Console
    from rich.table import Table

    from glee_core.checkpoint import CheckpointError
    from glee_core.image_io import load_image
    from glee_core.visualize import save_overlay
    from mllm.answer_io import answer_to_json, segments_as_detections
    from mllm.io import load_gleellm

    try:
        quantization = None
        if bits is not None:
            from adapters.quantization import quantization_config

            quantization = quantization_config(bits)
        llm = load_gleellm(model, quantization_config=quantization, device=device)
        array = load_image(image)
        answer = llm.generate(array, question, max_new_tokens=max_new_tokens, mask_source=mask_source)
    except (ValueError, CheckpointError, ImportError) as exc:
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    console = Console()
    console.print(f"[bold]Answer:[/bold] {answer.text}")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{image.stem}_answer.json").write_text(json.dumps(answer_to_json(answer, question), indent=1))
    written = []
    masks = segments_as_detections(answer)
    if masks is not None:
        written.append(save_overlay(out / f"{image.stem}_masks.png", array, masks))
        table = Table(title=f"{len(answer.segments)} [SEG] in the answer")
        for column in ("#", "phrase", "score", "box x1,y1,x2,y2"):
            table.add_column(column)
        for i, span in enumerate(answer.segments):
            det = span.detections
            if det is None:  # a [SEG] the model's hidden states gave no mask for
                table.add_row(str(i), span.phrase, "-", "-")
                continue
            table.add_row(str(i), span.phrase, f"{det.scores[0]:.3f}", ", ".join(f"{v:.0f}" for v in det.boxes[0]))
        console.print(table)
    cited = answer.cited_objects()
    if cited is not None and len(cited):
        written.append(save_overlay(out / f"{image.stem}_cited.png", array, cited))
        console.print("cited objects: " + ", ".join(f"<obj{k}>" for k in answer.cited))
    console.print(f"wrote {out / (image.stem + '_answer.json')}" + "".join(f", {p}" for p in written))


def register(root: typer.Typer) -> None:
    """Add ``gleekit ask`` to the top-level app."""
    root.command("ask")(ask)
