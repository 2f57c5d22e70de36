"""``gleekit eval ...``: one command per benchmark, all run the same way (heavy imports inside the commands).

Every command loads the model (refusing incomplete weights unless ``--allow-incomplete-weights``), runs the
benchmark with a progress bar — sharded over processes under ``accelerate launch`` — prints the result table
and writes, when asked, the JSON report, the predictions in the official submission format and plots.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import typer

app = typer.Typer(help="Evaluate models on benchmarks (official formats and metric definitions).",
                  no_args_is_help=True)

MODEL = typer.Option("nano", help="GLEE model folder, bundled name, official checkpoint (with --preset) or GLEE-LLM folder.")
PRESET = typer.Option(None, help="Architecture of an official checkpoint file: lite-r50, plus-swinl or pro-eva02l.")
DATA_ROOT = typer.Option(..., help="Folder holding the dataset in its official layout.")
LIMIT = typer.Option(None, min=1, help="Evaluate only the first N samples.")
JSON_OUT = typer.Option(None, help="Write every number and the exact settings to this JSON file.")
PREDICTIONS_OUT = typer.Option(None, help="Write the predictions in the official submission format here (a file for "
                                "COCO / LVIS, a folder for YouTube-VIS and MOT), also for splits without public "
                                "ground truth.")
PLOT_DIR = typer.Option(None, help="Write plots (per-category AP, PR curve) as PNG into this folder.")
PREDICTIONS = typer.Option(None, help="Score this predictions file (official submission format) instead of "
                            "running a model.")
BATCH_SIZE = typer.Option(1, min=1, help="Images per model call.")
ALLOW_INCOMPLETE = typer.Option(False, "--allow-incomplete-weights",
                                help="Evaluate even if some weights did not load (the report says so loudly).")


def _evaluate(make: Callable[[], object], model: str, *, preset: Optional[str], limit: Optional[int],
              json_out: Optional[Path], allow_incomplete: bool, predictions_out: Optional[Path] = None,
              plot_dir: Optional[Path] = None, predictions: Optional[Path] = None, batch_size: int = 1,
              agent: Optional[Callable[[object], object]] = None) -> None:
    """Build the benchmark, load the model (or read ``predictions``; ``agent`` turns the loaded model into the
    evaluated one), run, report (on the main process only). A remote model that fails (ConnectionError) ends the
    run with its message."""
    from rich.console import Console

    from eval.models import EvalModel, load_eval_model
    from eval.predictions import load_results
    from eval.report import EvalReport
    from eval.runner import collect_records
    from glee_core.checkpoint import CheckpointError
    from glee_core.predictor import MAX_BATCH_IMAGES

    console = Console()
    if batch_size > MAX_BATCH_IMAGES:
        console.print(f"[red]error:[/] --batch-size {batch_size}: at most {MAX_BATCH_IMAGES} images per model call")
        raise typer.Exit(2)
    try:
        benchmark = make()
        if predictions is not None:
            evaluated = EvalModel.from_predictions(predictions)
            records = benchmark.records_from_predictions(load_results(predictions))[:limit]
        else:
            evaluated = load_eval_model(model, preset=preset, allow_incomplete=allow_incomplete)
            if agent is not None:
                evaluated = agent(evaluated)
    except (FileNotFoundError, CheckpointError, ValueError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    if predictions is None:
        try:
            records = collect_records(benchmark, evaluated, limit=limit, batch_size=batch_size)
        except ConnectionError as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(2) from None
        if records is None:  # not the main process
            return
    if predictions_out is not None:  # before scoring: server-scored splits have no ground truth here
        written = benchmark.write_predictions(records, predictions_out)
        console.print(f"predictions: {written}" if written else "this benchmark has no submission format")
    try:
        result = benchmark.score(records)
    except ValueError as error:
        console.print(f"[red]cannot score:[/] {error}")
        raise typer.Exit(2) from None
    settings = {**benchmark.settings(), "limit": limit, "samples": len(records)}
    report = EvalReport(benchmark.name, evaluated, settings, result)
    console.print(report.table())
    if plot_dir is not None:
        from eval.plots import save_per_category_ap, save_pr_curve

        plot_dir.mkdir(parents=True, exist_ok=True)
        if result.per_category:
            console.print(f"plot: {save_per_category_ap(result.per_category, plot_dir / 'per_category_ap.png', benchmark.name)}")
        if result.pr_curve is not None:
            console.print(f"plot: {save_pr_curve(*result.pr_curve, plot_dir / 'pr_curve.png', benchmark.name)}")
    if json_out is not None:
        console.print(f"report: {report.write_json(json_out)}")


def _refer_command(dataset: str) -> None:
    def command(model: str = MODEL, preset: Optional[str] = PRESET, data_root: Path = DATA_ROOT,
                split: str = typer.Option("val", help="val, testA, testB (refcoco, refcoco+), val / test (refcocog umd)."),
                split_by: Optional[str] = typer.Option(None, help="refs file: unc (refcoco, refcoco+) or umd (refcocog)."),
                image_root: Optional[Path] = typer.Option(None, help="Image folder (default: "
                                                          "<data_root>/images/mscoco/images/train2014)."),
                limit: Optional[int] = LIMIT, json_out: Optional[Path] = JSON_OUT,
                allow_incomplete_weights: bool = ALLOW_INCOMPLETE) -> None:
        from eval.benchmarks.refer import ReferBenchmark

        _evaluate(lambda: ReferBenchmark(data_root, dataset, split, split_by=split_by, image_root=image_root), model, preset=preset,
                  limit=limit, json_out=json_out, allow_incomplete=allow_incomplete_weights)

    command.__doc__ = (f"{dataset}: REC Acc@0.5 and RES cIoU / gIoU / Prec@X, per sentence "
                       "(GLEE: referring prompt; GLEE-LLM: LISA's question).")
    app.command(dataset)(command)


for _dataset in ("refcoco", "refcoco+", "refcocog"):
    _refer_command(_dataset)


@app.command("reasonseg")
def reasonseg(model: str = MODEL, preset: Optional[str] = PRESET, data_root: Path = DATA_ROOT,
              split: str = typer.Option("val", help="val or test."), limit: Optional[int] = LIMIT,
              json_out: Optional[Path] = JSON_OUT, allow_incomplete_weights: bool = ALLOW_INCOMPLETE,
              agent: Optional[str] = typer.Option(None, help="Evaluate an LLM agent instead: openai:MODEL, served by "
                                                  "any OpenAI-compatible endpoint (key: $OPENAI_API_KEY), plans, "
                                                  "segments with the GLEE model of --model, looks at numbered "
                                                  "overlays and selects."),
              agent_base_url: Optional[str] = typer.Option(None, help="The agent's endpoint (default: "
                                                           "$OPENAI_BASE_URL or https://api.openai.com/v1)."),
              agent_max_steps: int = typer.Option(6, min=1, help="Model replies the agent may take per query.")) -> None:
    """ReasonSeg gIoU / cIoU, overall and for short and long queries (with --agent also how the agent's queries
    ended: selected, no_match, step_limit)."""
    from eval.benchmarks.reasonseg import ReasonSegBenchmark
    from eval.models import load_agent_model

    make_agent = None if agent is None else (
        lambda glee: load_agent_model(glee, agent, base_url=agent_base_url, max_steps=agent_max_steps))
    _evaluate(lambda: ReasonSegBenchmark(data_root, split), model, preset=preset, limit=limit, json_out=json_out,
              allow_incomplete=allow_incomplete_weights, agent=make_agent)


def _detection_command(name: str, default_split: str, split_help: str, doc: str) -> None:
    def command(model: str = MODEL, preset: Optional[str] = PRESET, data_root: Path = DATA_ROOT,
                split: str = typer.Option(default_split, help=split_help), limit: Optional[int] = LIMIT,
                json_out: Optional[Path] = JSON_OUT, predictions_out: Optional[Path] = PREDICTIONS_OUT,
                plot_dir: Optional[Path] = PLOT_DIR, predictions: Optional[Path] = PREDICTIONS,
                batch_size: int = BATCH_SIZE, allow_incomplete_weights: bool = ALLOW_INCOMPLETE) -> None:
        from eval.benchmarks.coco import CocoBenchmark
        from eval.benchmarks.lvis import LvisBenchmark

        benchmark = {"coco": CocoBenchmark, "lvis": LvisBenchmark}[name]
        _evaluate(lambda: benchmark(data_root, split), model, preset=preset, limit=limit, json_out=json_out,
                  allow_incomplete=allow_incomplete_weights, predictions_out=predictions_out, plot_dir=plot_dir,
                  predictions=predictions, batch_size=batch_size)

    command.__doc__ = doc
    app.command(name)(command)


_detection_command("coco", "val2017", "Split name: annotations/instances_<split>.json + <split>/.",
                   "COCO box and mask AP (pycocotools), every category name as the prompt.")
_detection_command("lvis", "val", "Split name: lvis_v1_<split>.json.",
                   "LVIS AP with its federated rules (lvis-api), APr / APc / APf.")


@app.command("ytvis")
def ytvis(model: str = MODEL, preset: Optional[str] = PRESET, data_root: Path = DATA_ROOT,
          split: str = typer.Option("valid", help="Split folder / annotation name."),
          mode: str = typer.Option("official", help="official (clip inference + MinVIS association) or online."),
          frames_root: Optional[Path] = typer.Option(None, help="Frame folder when it differs from "
                                                     "<data_root>/<split>/JPEGImages (e.g. GLEE's *_sub.json splits)."),
          limit: Optional[int] = LIMIT, json_out: Optional[Path] = JSON_OUT,
          predictions_out: Optional[Path] = PREDICTIONS_OUT, predictions: Optional[Path] = PREDICTIONS,
          allow_incomplete_weights: bool = ALLOW_INCOMPLETE) -> None:
    """YouTube-VIS AP (spatio-temporal mask IoU), every category name as the prompt."""
    from eval.benchmarks.ytvis import YtvisBenchmark

    _evaluate(lambda: YtvisBenchmark(data_root, split, mode=mode, frames_root=frames_root), model, preset=preset, limit=limit,
              json_out=json_out, allow_incomplete=allow_incomplete_weights, predictions_out=predictions_out,
              predictions=predictions)


@app.command("mot")
def mot(model: str = MODEL, preset: Optional[str] = PRESET, data_root: Path = DATA_ROOT,
        split: str = typer.Option("train", help="Split folder: <data_root>/<split>/<SEQ>/."),
        categories: str = typer.Option("person", help="Comma-separated category names to track."),
        score_threshold: float = typer.Option(0.2, help="Per-frame detection score threshold."),
        rules: str = typer.Option("MOT17", help="Official distractor classes of MOT16, MOT17 or MOT20."),
        limit: Optional[int] = LIMIT, json_out: Optional[Path] = JSON_OUT,
        predictions_out: Optional[Path] = PREDICTIONS_OUT, allow_incomplete_weights: bool = ALLOW_INCOMPLETE) -> None:
    """MOTChallenge tracking: HOTA, MOTA, IDF1, ID switches (TrackEval), online tracking."""
    from eval.benchmarks.mot import MotBenchmark

    names = tuple(c.strip() for c in categories.split(",") if c.strip())
    _evaluate(lambda: MotBenchmark(data_root, split, categories=names, score_threshold=score_threshold, rules=rules), model,
              preset=preset, limit=limit, json_out=json_out, allow_incomplete=allow_incomplete_weights,
              predictions_out=predictions_out)


@app.command("shapeworld")
def shapeworld(
    model: str = MODEL, preset: Optional[str] = PRESET,
    num_scenes: int = typer.Option(150, min=1, help="Held-out scenes (detection, referring, visual prompts)."),
    num_videos: int = typer.Option(20, min=0, help="Held-out videos for tracking (0: skip)."),
    split: str = typer.Option("test", help="Split (test is never used in training)."),
    seed: int = typer.Option(2026, help="Scene seed (2026: the nano model card's)."),
    video_seed: int = typer.Option(0, help="Video seed (0: the nano model card's)."),
    json_out: Optional[Path] = JSON_OUT, plot_dir: Optional[Path] = PLOT_DIR,
    allow_incomplete_weights: bool = ALLOW_INCOMPLETE,
) -> None:
    """Detection AP, referring Acc@0.5 / cIoU / gIoU, visual prompts and tracking HOTA on fresh shapeworld data."""
    from eval.shapeworld import ShapeworldBenchmark
    from eval.shapeworld_video import ShapeworldVideoBenchmark

    _evaluate(lambda: ShapeworldBenchmark(num_scenes, split=split, seed=seed), model, preset=preset, limit=None,
              json_out=json_out, allow_incomplete=allow_incomplete_weights, plot_dir=plot_dir)
    if num_videos:
        video_json = json_out.with_name(json_out.stem + "_video.json") if json_out is not None else None
        _evaluate(lambda: ShapeworldVideoBenchmark(num_videos, split=split, seed=video_seed), model, preset=preset,
                  limit=None, json_out=video_json, allow_incomplete=allow_incomplete_weights)


@app.command("shapeworld-video")
def shapeworld_video(
    model: str = MODEL, preset: Optional[str] = PRESET,
    num_videos: int = typer.Option(20, min=1, help="Held-out videos to evaluate."),
    mode: str = typer.Option("online", help="online or official."),
    score_threshold: float = typer.Option(0.25, help="Online: a track starts from a detection scoring at least this; "
                                          "official: the per-track score threshold (0.25 / 0.2 track best with nano "
                                          "on validation videos)."),
    continue_threshold: Optional[float] = typer.Option(0.2, help="Online: a live track also continues with a "
                                                                 "detection scoring down to this."),
    split: str = typer.Option("test", help="Video split (test is never used in training)."),
    seed: int = typer.Option(0, help="Dataset seed."),
    json_out: Optional[Path] = JSON_OUT, allow_incomplete_weights: bool = ALLOW_INCOMPLETE,
) -> None:
    """Tracking quality (HOTA, IDF1, MOTA, ID switches) on fresh shapeworld videos."""
    from eval.shapeworld_video import ShapeworldVideoBenchmark

    _evaluate(lambda: ShapeworldVideoBenchmark(num_videos, split=split, seed=seed, mode=mode,
                                               score_threshold=score_threshold, continue_threshold=continue_threshold),
              model, preset=preset, limit=None, json_out=json_out, allow_incomplete=allow_incomplete_weights)


@app.command("mllm-shapeworld")
def mllm_shapeworld(
    model: str = typer.Option("shapeworld-tiny", help="GleeLLM folder or bundled name."),
    num_scenes: int = typer.Option(50, min=1, help="Held-out test scenes."),
    per_kind: int = typer.Option(2, min=1, help="Questions of each kind per scene."),
    seed: int = typer.Option(2026, help="Test-scene seed."),
    mask_source: Optional[str] = typer.Option(None, help="glee or pointer (default: the model's setting)."),
    json_out: Optional[Path] = JSON_OUT,
) -> None:
    """Reasoning gIoU/cIoU, referring gIoU/cIoU, exact [SEG] count on two-mask answers and region-caption accuracy
    of a GLEE-LLM on held-out shapeworld scenes (generated answers, no teacher forcing)."""
    from rich.console import Console

    from eval.mllm_shapeworld import evaluate_mllm_shapeworld
    from mllm.io import load_gleellm

    llm = load_gleellm(model)
    try:
        scores = evaluate_mllm_shapeworld(llm, num_scenes=num_scenes, seed=seed, per_kind=per_kind,
                                          mask_source=mask_source)
    except ValueError as exc:
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    Console().print(scores.table())
    if json_out is not None:
        settings = {"model": model, "num_scenes": num_scenes, "per_kind": per_kind, "seed": seed,
                    "mask_source": mask_source or llm.config.mask_source}
        json_out.write_text(json.dumps({**settings, **scores.as_dict(), "examples": scores.examples}, indent=1))


SW_PER_SCENE = typer.Option(2, min=1, help="Shapeworld: positives and negatives per scene (each up to this many).")
REFER_ROOT = typer.Option(None, help="Use a labelled set in the refer layout under this folder instead of shapeworld "
                          "(<data_root>/<dataset>/{instances.json, refs(<split_by>).p}).")
REFER_DATASET = typer.Option("refcoco", help="With --data-root: the dataset folder name.")
REFER_SPLIT_BY = typer.Option(None, help="With --data-root: refs file, unc or umd (default: the dataset's usual one).")
REFER_IMAGES = typer.Option(None, help="With --data-root: image folder (default: the reader's).")
REFER_NEGATIVES = typer.Option(None, help="With --data-root: JSON list of {\"image_id\": int, \"sentence\": str} that "
                               "describe nothing in that image (default: sentences borrowed from other images, noisy).")


def _rejection_benchmark(data_root: Optional[Path], *, num_scenes: int, split: str, seed: int, per_scene: int,
                         prompt: str, dataset: str, split_by: Optional[str], image_root: Optional[Path],
                         negatives: Optional[Path], calibrator=None):
    from eval.rejection import ReferRejectionBenchmark, ShapeworldRejectionBenchmark

    if data_root is None:
        return ShapeworldRejectionBenchmark(num_scenes, split=split, seed=seed, per_scene=per_scene, prompt=prompt,
                                            calibrator=calibrator)
    if prompt != "referring":
        raise ValueError("a refer-layout set calibrates referring prompts only (--prompt referring)")
    return ReferRejectionBenchmark(data_root, dataset, split, split_by=split_by, image_root=image_root,
                                   negatives=negatives, seed=seed, calibrator=calibrator)


@app.command("calibrate-refer")
def calibrate_refer(
    out: Path = typer.Option(..., help="Write the calibration (a small JSON) here."),
    model: str = MODEL, preset: Optional[str] = PRESET,
    num_scenes: int = typer.Option(150, min=1, help="Shapeworld scenes to fit on."),
    split: str = typer.Option("val", help="Split to fit on (shapeworld or refer; keep test for gleekit eval rejection)."),
    seed: int = typer.Option(0, help="Shapeworld scene seed; with --data-root the seed of borrowed negatives."),
    per_scene: int = SW_PER_SCENE,
    prompt: str = typer.Option("referring", help="referring (expressions) or category (one shape name; shapeworld)."),
    target: str = typer.Option("exists", help="What counts as positive: exists (the prompt describes an object in "
                               "the image) or correct (and the predicted box hits it at IoU 0.5)."),
    target_rejection: Optional[float] = typer.Option(None, help="Pick the threshold that rejects "
                                                     "at least this share of the fit set's negatives (default: the "
                                                     "best balanced accuracy)."),
    data_root: Optional[Path] = REFER_ROOT, dataset: str = REFER_DATASET, split_by: Optional[str] = REFER_SPLIT_BY,
    image_root: Optional[Path] = REFER_IMAGES, negatives: Optional[Path] = REFER_NEGATIVES,
    limit: Optional[int] = LIMIT, allow_incomplete_weights: bool = ALLOW_INCOMPLETE,
) -> None:
    """Fit the calibrated "no such object" decision of referring (or category) prompts: P(the described object is
    in the image) from the prediction's scores, and its threshold (see glee_core.rejection)."""
    from rich.console import Console
    from rich.table import Table

    from eval.models import load_eval_model
    from eval.rejection import fit_calibrator, rejection_result
    from eval.report import _format
    from eval.runner import collect_records
    from glee_core.checkpoint import CheckpointError

    console = Console()
    try:
        benchmark = _rejection_benchmark(data_root, num_scenes=num_scenes, split=split, seed=seed,
                                         per_scene=per_scene, prompt=prompt, dataset=dataset, split_by=split_by,
                                         image_root=image_root, negatives=negatives)
        if target not in ("exists", "correct"):
            raise ValueError(f"--target must be exists or correct, got {target!r}")
        if target_rejection is not None and not 0.0 < target_rejection <= 1.0:
            raise ValueError(f"--target-rejection must be in (0, 1], got {target_rejection}")
        evaluated = load_eval_model(model, preset=preset, allow_incomplete=allow_incomplete_weights)
    except (FileNotFoundError, CheckpointError, ValueError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    records = collect_records(benchmark, evaluated, limit=limit)
    if records is None:  # not the main process
        return
    samples = [s for record in records for s in record]
    try:
        calibrator = fit_calibrator(samples, target=target, target_rejection=target_rejection, prompt=prompt,
                                    model=evaluated, data={"benchmark": benchmark.name, **benchmark.settings(),
                                                           "limit": limit})
    except ValueError as error:
        console.print(f"[red]cannot fit:[/] {error}")
        raise typer.Exit(2) from None
    calibrator.save(out)
    table = Table(title=f"fit set: {benchmark.name} — {evaluated.source}",
                  caption=f"threshold {calibrator.threshold:.3f} ({calibrator.threshold_rule}), target {target}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    result = rejection_result(samples, calibrator)
    for name, value in [*result.rows, *result.counts.items()]:
        table.add_row(name, _format(value))
    console.print(table)
    console.print(f"calibration: {out}")


@app.command("rejection")
def rejection(
    calibration: Path = typer.Option(..., help="A calibration written by gleekit eval calibrate-refer."),
    model: str = MODEL, preset: Optional[str] = PRESET,
    num_scenes: int = typer.Option(150, min=1, help="Held-out shapeworld scenes."),
    split: str = typer.Option("test", help="Split (test is never used in training or calibration)."),
    seed: int = typer.Option(2026, help="Shapeworld scene seed (2026: the nano model card's); with --data-root the "
                             "seed of borrowed negatives."),
    per_scene: int = SW_PER_SCENE,
    data_root: Optional[Path] = REFER_ROOT, dataset: str = REFER_DATASET, split_by: Optional[str] = REFER_SPLIT_BY,
    image_root: Optional[Path] = REFER_IMAGES, negatives: Optional[Path] = REFER_NEGATIVES,
    limit: Optional[int] = LIMIT, json_out: Optional[Path] = JSON_OUT,
    allow_incomplete_weights: bool = ALLOW_INCOMPLETE,
) -> None:
    """Held-out "no such object" quality of a calibration: negatives rejected, positives accepted, Acc@0.5 after
    rejection (a rejected positive is a miss), AUROC, Brier score and ECE."""
    from rich.console import Console

    from glee_core.rejection import RejectionCalibrator

    try:
        calibrator = RejectionCalibrator.load(calibration)
    except (FileNotFoundError, ValueError) as error:
        Console().print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None

    def check(evaluated):  # refuse a calibration fit for other weights (raises ValueError: reported, exit 2)
        calibrator.check_model(evaluated.sha256)
        return evaluated

    _evaluate(lambda: _rejection_benchmark(data_root, num_scenes=num_scenes, split=split, seed=seed,
                                           per_scene=per_scene, prompt=calibrator.prompt, dataset=dataset,
                                           split_by=split_by, image_root=image_root, negatives=negatives,
                                           calibrator=calibrator),
              model, preset=preset, limit=limit, json_out=json_out, allow_incomplete=allow_incomplete_weights,
              agent=check)


def register(root: typer.Typer) -> None:
    """Add ``gleekit eval ...`` to the top-level app."""
    root.add_typer(app, name="eval")
