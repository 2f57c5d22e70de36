"""The train package's commands: ``gleekit data shapeworld``, ``gleekit train glee``, ``gleekit train mllm``,
``gleekit train referring-head``, ``gleekit finetune`` and ``gleekit tune-vocab`` (typer apps; heavy imports
happen inside the commands so ``gleekit --help`` stays fast)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

app = typer.Typer(help="gleekit training and dataset commands.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: write shapeworld in the official formats.", no_args_is_help=True)
train_app = typer.Typer(help="Train models from a YAML config.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")


class Task(str, Enum):
    detection = "detection"
    referring = "referring"
    reasoning = "reasoning"
    conversation = "conversation"
    video = "video"
    mot = "mot"
    semseg = "semseg"


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


@data_app.command("shapeworld")
def shapeworld(
    out_dir: Path = typer.Argument(..., file_okay=False, help="Output folder (created if missing)."),
    task: Task = typer.Option(..., help="Which official format to write."),
    split: Split = typer.Option(Split.train, help="Scene split; splits never share a scene."),
    n: int = typer.Option(100, "--n", min=1, help="Number of scenes (videos for --task video and mot)."),
    seed: int = typer.Option(0, min=0, help="Dataset seed: same arguments give byte-identical files."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Generate shapeworld scenes and write them as COCO / refer / ReasonSeg / LLaVA / YouTube-VIS / ADE20K-layout data."""
    from train.data.shapeworld.export import write_shapeworld

    path = write_shapeworld(out_dir, task.value, split.value, n, seed, progress=progress)
    unit = "videos" if task in (Task.video, Task.mot) else "scenes"
    typer.echo(f"wrote {n} {split.value} {unit} of shapeworld {task.value} (seed {seed}) to {path}")


def _train(make_config, stop_after: int | None = None):
    """Build the config (``make_config()``) and run the GLEE trainer on its data; a bad config or bad data ends
    the command with a one-line error. Returns (training source, TrainResult)."""
    from train.glee.trainer import GleeTrainer, sources_from_config

    try:
        cfg = make_config()
        source, val_source = sources_from_config(cfg)
        return source, GleeTrainer(cfg, source, val_source=val_source).train(resume=True, stop_after=stop_after)
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None


@train_app.command("glee")
def train_glee(
    config: Path = typer.Option(..., exists=True, dir_okay=False, help="Training config (YAML), e.g. "
                                                                       "train/recipes/nano.yaml."),
    output_dir: Path | None = typer.Option(None, help="Override the config's output_dir."),
    steps: int | None = typer.Option(None, min=1, help="Override the config's number of steps (the schedule)."),
    stop_after: int | None = typer.Option(None, min=1, help="End this run at that step; the schedule is unchanged "
                                                              "and a rerun resumes it."),
) -> None:
    """Train GLEE (the official losses) on shapeworld or a COCO-format dataset; run it under `accelerate launch`
    for several GPUs or nodes. A rerun with the same output_dir resumes from its last checkpoint."""
    from train.glee.config import TrainConfig

    def make_config() -> TrainConfig:
        cfg = TrainConfig.from_yaml(config)
        cfg.output_dir = str(output_dir) if output_dir is not None else cfg.output_dir
        cfg.steps = steps if steps is not None else cfg.steps
        return cfg

    _, result = _train(make_config, stop_after)
    typer.echo(f"trained {result.steps} steps; model: {result.model_dir}; loss curve: "
               f"{result.output_dir / 'loss_curve.png'}")


@train_app.command("referring-head")
def train_referring_head(
    out: Path = typer.Option(..., file_okay=False, help="Model folder to write: the model with the head attached."),
    model: str = typer.Option("nano", help="The frozen model: a model folder or a bundled name (nano)."),
    scenes: int = typer.Option(3500, min=1, help="Shapeworld train scenes to collect samples from."),
    seed: int = typer.Option(17, min=0, help="Shapeworld seed of those scenes."),
    val_scenes: int = typer.Option(300, min=1, help="Shapeworld val scenes for the held-out figures."),
    val_seed: int = typer.Option(5, min=0, help="Shapeworld seed of the val scenes."),
    samples: list[Path] | None = typer.Option(None, exists=True, dir_okay=False,
                                              help="Train on these sample files (--save-samples of earlier runs) "
                                                   "instead of collecting; repeatable."),
    save_samples: Path | None = typer.Option(None, dir_okay=False, help="Also write the collected train samples."),
    steps: int = typer.Option(6000, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(256, min=1, help="Expressions per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, one-cycle)."),
    dim: int = typer.Option(128, min=8, help="Width of the head."),
    layers: int = typer.Option(3, min=1, help="Transformer layers of the head."),
    heads: int = typer.Option(4, min=1, help="Attention heads of the head."),
    dropout: float = typer.Option(0.1, min=0.0, max=0.9, help="Dropout while training the head."),
    half: bool = typer.Option(False, help="Store the weights as float16 (halves the file)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train the referring head (re-scores the queries of a referring expression, with a "no such object"
    choice) on a frozen model, from shapeworld expressions and negatives; GLEE's weights are unchanged. Writes
    the model folder, its loss curve (referring_head_curve.png) and the held-out figures."""
    import torch

    from glee_core.config import ReferringHeadConfig
    from glee_core.modeling.glee import GleeModel
    from train.curves import save_loss_curve
    from train.glee.referring_head import (ReferringSamples, attach_head, collect_samples, evaluate_head,
                                           glee_choice_accuracy, new_head, train_head)

    try:
        config = ReferringHeadConfig(dim=dim, layers=layers, heads=heads, dropout=dropout)
        if dim % heads:
            raise ValueError(f"--dim ({dim}) must be a multiple of --heads ({heads})")
        glee = GleeModel.from_pretrained(model).float().eval()
        if samples:
            train_samples = ReferringSamples.concatenate([ReferringSamples.load(path) for path in samples])
        else:
            train_samples = collect_samples(glee, scenes, split="train", seed=seed, progress=progress)
            if save_samples is not None:
                train_samples.save(save_samples)
        held_out = collect_samples(glee, val_scenes, split="val", seed=val_seed, progress=progress)
        torch.manual_seed(0)
        head = new_head(glee, config)
        history = train_head(head, train_samples, steps=steps, batch_size=batch_size, lr=lr, held_out=held_out,
                             eval_every=max(1, steps // 20), progress=progress)
        attach_head(glee, head, config).save_pretrained(out, dtype=torch.float16 if half else None)
        curve = save_loss_curve(out / "referring_head_curve.png", [(h["step"], h["loss"]) for h in history],
                                [(h["step"], h["held-out loss"]) for h in history], title="referring head")
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    after = evaluate_head(head, held_out)
    typer.echo(f"trained on {len(train_samples)} expressions, {steps} steps; {len(held_out)} held-out expressions "
               f"({val_scenes} val scenes):")
    typer.echo(f"  right query on positives: GLEE's top query {glee_choice_accuracy(held_out):.3f} -> head's "
               f"{after['positives, best query']:.3f} (its top choice, none included: {after['positives']:.3f})")
    typer.echo(f"  negatives answered 'none': {after['negatives']:.3f}")
    typer.echo(f"model: {out}; loss curve: {curve}")


@train_app.command("mllm")
def train_mllm(
    config: Path = typer.Option(..., exists=True, dir_okay=False, help="Training config (YAML), e.g. "
                                                                       "train/recipes/mllm_shapeworld_cpu.yaml."),
    output_dir: Path | None = typer.Option(None, help="Override the config's output_dir."),
    stop_after: int | None = typer.Option(None, min=1, help="End this run at that step; a rerun resumes it."),
) -> None:
    """Train a GLEE-LLM (reasoning segmentation) from a YAML config: one CPU process as is, several processes or
    GPUs under `accelerate launch`, DeepSpeed ZeRO-2/3 per the config. A rerun resumes from the last checkpoint."""
    from train.mllm.config import MllmTrainConfig
    from train.mllm.data_config import source_from_config
    from train.mllm.trainer import MllmTrainer

    try:
        cfg = MllmTrainConfig.from_yaml(config)
        cfg.output_dir = str(output_dir) if output_dir is not None else cfg.output_dir
        result = MllmTrainer(cfg, source_from_config(cfg.data)).train(resume=True, stop_after=stop_after)
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    typer.echo(f"trained {result.steps} steps; metrics: {result.output_dir / 'metrics.jsonl'}; model: "
               f"{result.model_dir or 'not exported (schedule unfinished or export off)'}")


def finetune(
    data: Path = typer.Option(..., exists=True, dir_okay=False, help="COCO-format instances json of your data."),
    images: Path = typer.Option(..., exists=True, file_okay=False, help="Folder the json's file_names are in."),
    from_: str = typer.Option("nano", "--from", help="Starting weights: a model folder, a bundled name (nano), or "
                                                     "an official checkpoint (.pth) with --preset."),
    preset: str | None = typer.Option(None, help="Architecture of an official checkpoint given to --from."),
    out: Path = typer.Option(..., help="Output folder (checkpoints, loss curve, final model in OUT/model)."),
    val_data: Path | None = typer.Option(None, exists=True, dir_okay=False, help="Validation COCO json."),
    steps: int = typer.Option(500, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(4, min=1, help="Images per step (per process)."),
    lr: float = typer.Option(1e-4, help="Peak learning rate (AdamW, cosine decay)."),
    freeze: str = typer.Option("backbone,text_encoder", help="Comma-separated modules to keep frozen; '' trains all."),
) -> None:
    """Fine-tune GLEE on your own COCO-format categories (masks used when the json has segmentations)."""
    from train.glee.config import TrainConfig

    source, result = _train(lambda: TrainConfig.from_dict({
        "model": {"preset": preset, "init": from_, "freeze": [m.strip() for m in freeze.split(",") if m.strip()]},
        "data": {"source": "coco", "coco_json": str(data), "image_root": str(images),
                 "val_coco_json": str(val_data) if val_data else None},
        "optim": {"lr": lr, "warmup_steps": min(50, steps // 10)},
        "steps": steps, "batch_size": batch_size, "output_dir": str(out),
        "eval_every": max(1, steps // 5), "checkpoint_every": max(1, steps // 5),
    }))
    typer.echo(f"fine-tuned {result.steps} steps on {len(source.category_names)} categories; model: "
               f"{result.model_dir}; loss curve: {result.output_dir / 'loss_curve.png'}")


def _names(text: str | None, option: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise typer.BadParameter(f"{option} needs at least one comma-separated name, got {text!r}")
    return names


def _print_ap50(title: str, before: dict[str, float], after: dict[str, float]) -> None:
    typer.echo(f"{title}: box AP50 before -> after")
    for name in before:
        typer.echo(f"  {name:<24} {before[name]:.3f} -> {after[name]:.3f}")


def tune_vocab(
    data: Path = typer.Option(..., exists=True, dir_okay=False, help="COCO-format instances json of a few labelled "
                                                                     "images."),
    images: Path = typer.Option(..., exists=True, file_okay=False, help="Folder the json's file_names are in."),
    model: str = typer.Option("nano", help="The model to tune for: a model folder, a bundled name (nano), or an "
                                           "official checkpoint (.pth) with --preset."),
    preset: str | None = typer.Option(None, help="Architecture of an official checkpoint given to --model."),
    out: Path = typer.Option(..., dir_okay=False, help="Where to write the tuned vocabulary (.safetensors)."),
    names: str | None = typer.Option(None, help="Comma-separated names of the vocabulary (default: the data's "
                                                "categories); every data category must be one of them."),
    vocabulary: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                           help="Start from this vocabulary file of the same model instead of "
                                                "encoding names (e.g. to tune it further)."),
    tune: str | None = typer.Option(None, help="Comma-separated names to learn (default: the names the data "
                                               "annotate); the others stay as they are."),
    steps: int = typer.Option(150, help="Optimizer steps."),
    lr: float = typer.Option(0.05, help="Peak learning rate (Adam, cosine decay)."),
    batch_size: int = typer.Option(4, help="Images per step."),
    seed: int = typer.Option(0, min=0, help="Seed of image order, flips and point sampling."),
    val_data: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                         help="Held-out COCO json: print its box AP50 per category before and after."),
    val_images: Path | None = typer.Option(None, exists=True, file_okay=False,
                                           help="Folder of --val-data's images (default: --images)."),
    curve: Path | None = typer.Option(None, dir_okay=False, help="Also write the loss curve as a PNG there."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Prompt tuning: learn a category vocabulary from a few labelled COCO images (the model is unchanged).

    Only the vocabulary's class embeddings and fusion tokens are optimised, with GLEE's training losses. Use the
    file like any category list, e.g. `gleekit predict --vocabulary OUT`; it runs only on the model it was tuned
    for."""
    from glee_core.modeling.glee import GleeModel
    from glee_core.vocabulary import Vocabulary
    from train.glee.prompt_tuning import (
        TuningConfig,
        evaluate_vocabulary,
        initial_vocabulary,
        load_dataset,
        tune_vocabulary,
        vocabulary_loss,
    )

    if names is not None and vocabulary is not None:
        raise typer.BadParameter("give --names or --vocabulary, not both")
    try:
        TuningConfig(steps=steps, lr=lr, batch_size=batch_size, seed=seed).check()
        glee = GleeModel.from_pretrained(model, preset=preset)
        start = Vocabulary.load(vocabulary) if vocabulary is not None else _names(names, "--names")
        dataset = load_dataset(data, images)
        val = load_dataset(val_data, val_images or images) if val_data is not None else None
        initial = initial_vocabulary(glee, start, dataset)
        loss_before = vocabulary_loss(glee, initial, dataset, batch_size=batch_size, seed=seed)
        before = evaluate_vocabulary(glee, initial, val, progress=progress) if val is not None else None
        tuned, _ = tune_vocabulary(glee, dataset, vocabulary=initial, tune=_names(tune, "--tune"), steps=steps, lr=lr,
                                   batch_size=batch_size, seed=seed, progress=progress, curve=curve)
        path = tuned.save(out)
        loss_after = vocabulary_loss(glee, tuned, dataset, batch_size=batch_size, seed=seed)
        if val is not None:
            _print_ap50(f"held-out {val_data.name} ({len(val.images)} images)", before,
                        evaluate_vocabulary(glee, tuned, val, progress=progress))
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    typer.echo(f"tuned the vocabulary of {len(tuned)} names in {steps} steps; loss on the {len(dataset.images)} "
               f"tuning images {loss_before:.3f} -> {loss_after:.3f}; vocabulary: {path}"
               + (f"; loss curve: {curve}" if curve is not None else ""))


def register(root: typer.Typer) -> None:
    """Add the train commands (``data ...``, ``train glee``, ``finetune``, ``tune-vocab``) to the top-level
    ``gleekit`` app."""
    root.add_typer(data_app, name="data")
    root.add_typer(train_app, name="train")
    root.command()(finetune)
    root.command("tune-vocab")(tune_vocab)
