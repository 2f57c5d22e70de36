"""The GLEE trainer: the official recipe (Hungarian matching, focal + L1/GIoU + mask BCE/dice losses with deep
supervision and denoising queries) in one loop that runs on a CPU, a GPU, or many through ``accelerate launch``.

Each optimizer step draws ``batch_size`` samples per process from a sample source; samples of different tasks
(category detection, referring expressions, visual prompts) share the step and go through one forward per task;
the losses are summed, weighted by each task's share of the batch. Progress shows as a tqdm bar; every
``eval_every`` steps a validation loss (and any user callbacks, e.g. AP) is computed, ``loss_curve.png`` and
``history.json`` are refreshed; every ``checkpoint_every`` steps ``checkpoint-last/`` is replaced atomically, and a
new run in the same ``output_dir`` with ``resume=True`` continues from it exactly (same data, same schedule).
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from glee_core.modeling.decoder import DenoisingQueries
from glee_core.modeling.glee import GleeModel
from train.checkpointing import (LAST, STATE_NAME, check_same_run, load_trainer_state, recover_interrupted,
                                 save_atomically)
from train.curves import save_loss_curve
from train.glee.collate import GleeBatch, collate
from train.glee.config import TrainConfig
from train.glee.criterion import SetCriterion
from train.glee.matcher import HungarianMatcher
from train.glee.query_colour import QueryColourHead
from train.glee.region_loss import RegionClassifier
from train.glee.samples import TrainSample, shuffle_categories
from train.schedules import lr_multiplier

Callback = Callable[[GleeModel, int], dict[str, float]]
"""``callback(model, step) -> {metric: value}``, run at every evaluation (the model is in eval mode)."""

# Denoising label encoders that detection prompts may use, smallest first (name, size).
_DN_ENCODERS = (("coco_label_enc", 80), ("obj365_label_enc", 100), ("vg_label_enc", 200))


class SampleSource(Protocol):
    def sample(self, index: int) -> TrainSample: ...


@dataclass
class TrainResult:
    """What a run produced: the final model folder and the loss history."""

    output_dir: Path
    model_dir: Path
    steps: int
    history: dict = field(default_factory=dict)


def dn_label_encoder(task: str, num_names: int) -> str | None:
    """The label encoder denoising queries use: ``grounding`` for referring / visual prompts, else the smallest
    detection encoder with at least ``num_names`` labels (None: too many names for DN)."""
    if task != "detection":
        return "grounding_label_enc"
    return next((name for name, size in _DN_ENCODERS if size >= num_names), None)


def build_model(config: TrainConfig) -> GleeModel:
    """The model to train: ``model.init`` weights (a folder, a bundled name or an official file) or a fresh
    ``model.preset``; parameters under ``model.freeze`` prefixes stop training."""
    section = config.model
    if section.init:
        model = GleeModel.from_pretrained(section.init, preset=None if Path(section.init).is_dir() else section.preset)
    elif section.preset:
        model = GleeModel.from_config(section.preset)
    else:
        raise ValueError("model needs a preset (fresh weights) or init (weights to start from)")
    names = [name for name, _ in model.named_parameters()]
    for prefix in section.freeze:
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ValueError(f"model.freeze: no parameter starts with {prefix!r}; top-level modules: "
                             f"{sorted({n.split('.')[0] for n in names})}")
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in section.freeze):
            param.requires_grad_(False)
    return model


RESUME_FREE = ("steps", "output_dir", "log_every", "eval_every", "val_batches", "checkpoint_every", "num_threads",
               "num_workers")
"""Settings a resumed run may change (how long, where and how often it reports); the rest must match."""


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    optim = config.optim
    if optim.schedule not in ("cosine", "constant"):
        raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {optim.schedule!r}")
    return lr_multiplier(optim.schedule, optim.warmup_steps, config.steps, optim.min_lr_ratio)


def param_groups(model: GleeModel, config: TrainConfig) -> list[dict]:
    """AdamW groups: backbone at ``lr × backbone_lr_mult``, text tower at ``lr × text_lr_mult``; no weight decay
    on one-dimensional parameters (norms, biases) and ``nn.Embedding`` tables (the official recipe's
    ``WEIGHT_DECAY_NORM`` / ``WEIGHT_DECAY_EMBED`` 0: queries, denoising label encoders, token embeddings)."""
    multipliers = {"backbone": config.optim.backbone_lr_mult, "text_encoder": config.optim.text_lr_mult}
    groups: dict[tuple[float, float], list] = defaultdict(list)
    seen: set[int] = set()  # a parameter shared by two modules goes in one group
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(prefix=module_name, recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = config.optim.lr * multipliers.get(name.split(".")[0], 1.0)
            no_decay = param.dim() <= 1 or isinstance(module, nn.Embedding)
            groups[(lr, 0.0 if no_decay else config.optim.weight_decay)].append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


class StepSamples(torch.utils.data.Dataset):
    """``steps[i]``: the ``batch_size`` samples that process ``rank`` of ``world`` trains on at step ``i`` (a pure
    function of the step, so data loader workers, resumed runs and every process agree)."""

    def __init__(self, source: SampleSource, batch_size: int, rank: int = 0, world: int = 1):
        self.source, self.batch_size, self.rank, self.world = source, batch_size, rank, world

    def __getitem__(self, step: int) -> list[TrainSample]:
        first = (step * self.world + self.rank) * self.batch_size
        return [self.source.sample(first + j) for j in range(self.batch_size)]


def _identity(samples: list[TrainSample]) -> list[TrainSample]:
    return samples


class GleeTrainer:
    """Train a :class:`GleeModel` on a sample source; see the module docstring.

    Args:
        config: the run's :class:`TrainConfig`.
        source: training samples (``source.sample(i)``); ``val_source``: validation samples (optional).
        model: the model (default: :func:`build_model` of the config).
        callbacks: extra evaluations, e.g. AP on held-out scenes.
    """

    def __init__(self, config: TrainConfig, source: SampleSource, *, val_source: SampleSource | None = None,
                 model: GleeModel | None = None, callbacks: list[Callback] = ()):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        if config.steps < 1 or config.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {config.steps} and {config.batch_size}")
        if config.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {config.num_workers}")
        self.config = config
        self.source, self.val_source = source, val_source
        self.callbacks = list(callbacks)
        self.output_dir = Path(config.output_dir)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        if config.loss.glee_weight == 0 and self.accelerator.num_processes > 1:
            raise ValueError("loss.glee_weight 0 (backbone pretraining) runs the backbone outside the distributed "
                             "model, whose gradients would then not be averaged: train it in one process")
        torch.manual_seed(config.seed)
        model = model if model is not None else build_model(config)
        groups = param_groups(model, config)
        self.region_classifier = self._region_classifier(model, source)
        self.query_colour = self._query_colour(model)
        for head in self._auxiliary_heads().values():
            groups.append({"params": list(head.parameters()), "lr": config.optim.lr,
                           "weight_decay": config.optim.weight_decay})
        optimizer = torch.optim.AdamW(groups, betas=config.optim.betas)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        for name, head in self._auxiliary_heads().items():
            setattr(self, name, self.accelerator.prepare(head))
        loss = config.loss
        self.criterion = SetCriterion(
            HungarianMatcher(num_points=loss.num_points),
            weights=loss.weights,
            num_points=loss.num_points,
            num_boxes_reducer=(lambda n: self.accelerator.reduce(n, reduction="mean"))
            if self.accelerator.num_processes > 1 else None)
        self.step = 0
        self.history: dict[str, list] = {"train": [], "val": [], "metrics": [], "components": []}

    # ------------------------------------------------------------------ helpers
    @property
    def unwrapped(self) -> GleeModel:
        return self.accelerator.unwrap_model(self.model)

    def _region_classifier(self, model: GleeModel, source: SampleSource) -> RegionClassifier | None:
        """The auxiliary head of ``loss.region_class_weight`` / ``loss.region_colour_weight`` (None when both are
        0)."""
        loss = self.config.loss
        for key in ("region_class_weight", "region_colour_weight"):
            if getattr(loss, key) < 0 or not math.isfinite(getattr(loss, key)):
                raise ValueError(f"loss.{key} must be >= 0, got {getattr(loss, key)}")
        region = loss.region_class_weight + loss.region_colour_weight
        if loss.glee_weight < 0 or not math.isfinite(loss.glee_weight) or loss.glee_weight == region == 0:
            raise ValueError(f"loss.glee_weight must be >= 0, and > 0 unless a region weight is, got "
                             f"{loss.glee_weight} and {region}: nothing would be trained")
        if region == 0:
            return None
        names = getattr(source, "category_names", None)
        if not names:
            raise ValueError("the region losses (loss.region_class_weight, loss.region_colour_weight) need a data "
                             "source with category names (shapeworld or coco)")
        backbone = model.backbone
        return RegionClassifier({level: backbone.out_channels[level] for level in backbone.out_features}, names,
                                per_level=loss.region_per_level, colour=loss.region_colour_weight > 0)

    def _query_colour(self, model: GleeModel) -> QueryColourHead | None:
        """The auxiliary head of ``loss.query_colour_weight`` (None when 0)."""
        weight = self.config.loss.query_colour_weight
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"loss.query_colour_weight must be >= 0, got {weight}")
        if weight and self.config.loss.glee_weight == 0:
            raise ValueError("loss.query_colour_weight needs GLEE's decoder to run: loss.glee_weight must be > 0")
        return QueryColourHead(model.config.hidden_dim) if weight else None

    def _auxiliary_heads(self) -> dict[str, nn.Module]:
        """The trainer's own heads that are on, by attribute name (also their key in the trainer state)."""
        heads = {"region_classifier": self.region_classifier, "query_colour": self.query_colour}
        return {name: head for name, head in heads.items() if head is not None}

    def _sample_stream(self, first: int, last: int) -> Iterator[list[TrainSample]]:
        """This process's samples of steps ``first .. last - 1``, made by ``config.num_workers`` background
        processes (0: in the training process)."""
        acc = self.accelerator
        steps = StepSamples(self.source, self.config.batch_size, acc.process_index, acc.num_processes)
        if self.config.num_workers == 0:
            return (steps[step] for step in range(first, last))
        loader = torch.utils.data.DataLoader(
            steps, batch_size=None, sampler=range(first, last), num_workers=self.config.num_workers,
            collate_fn=_identity, prefetch_factor=4, persistent_workers=False)
        return iter(loader)

    def _batches(self, samples: list[TrainSample], rng: np.random.Generator) -> list[GleeBatch]:
        groups: dict[tuple, list[TrainSample]] = defaultdict(list)
        for sample in samples:
            groups[sample.group].append(sample)
        batches = []
        for (task, _), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
            if task == "detection":
                group = shuffle_categories(rng, group, self.config.data.full_category_prob)
            batches.append(collate(group, self.unwrapped.config.input).to(self.accelerator.device))
        return batches

    def _denoising(self, batch: GleeBatch, generator: torch.Generator) -> DenoisingQueries | None:
        if not self.config.loss.denoising:
            return None
        encoder = dn_label_encoder(batch.task, len(batch.names))
        if encoder is None:
            return None
        return self.unwrapped.predictor.prepare_for_dn([t.labels for t in batch.targets],
                                                       [t.boxes for t in batch.targets], label_encoder=encoder,
                                                       generator=generator)

    def batch_losses(self, batches: list[GleeBatch], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Weighted sum over the task groups of one step: {"loss": total, "glee_loss": the same without auxiliary
        terms (detached; comparable across recipes), "<task>": that group's loss, and when on the region terms of
        :meth:`RegionOutput.losses` ("region_class", "region_accuracy", "region_colour")}. With
        ``loss.glee_weight`` 0 only the backbone runs (region classification of the detection batches)."""
        weights = self.config.loss
        batches = [b for b in batches if weights.glee_weight > 0 or b.task == "detection"]
        total_images = sum(len(b.targets) for b in batches)
        out: dict[str, torch.Tensor] = {}
        total, glee_total = None, 0.0
        for batch in batches:
            region = self.region_classifier is not None and batch.task == "detection"
            share = len(batch.targets) / total_images
            with self.accelerator.autocast():
                features = self.unwrapped.encode_image(batch.images) if region else None
            loss = 0.0
            if weights.glee_weight > 0:
                dn = self._denoising(batch, generator) if self.model.training else None
                with self.accelerator.autocast():
                    output = self.model(batch.images, denoising=dn, image_features=features, **batch.model_kwargs())
                matched = []
                losses = self.criterion(output.decoder, batch.targets, denoising=dn,
                                        visual_prompt=batch.task == "visual", generator=generator, matched=matched)
                loss = weights.glee_weight * losses["loss"]
                glee_total = glee_total + losses["loss"].detach() * share
                out[batch.task] = out.get(batch.task, 0) + losses["loss"].detach()
                if self.query_colour is not None:
                    term = self.query_colour(output.decoder.hs[-1], matched, batch.targets, batch.images)
                    loss = loss + weights.query_colour_weight * term
                    out["query_colour"] = out.get("query_colour", 0) + term.detach() * share
            if region:
                terms = self.region_classifier(features, batch.targets, batch.names, images=batch.images).losses()
                loss = loss + weights.region_class_weight * terms["region_class"]
                if "region_colour" in terms:
                    loss = loss + weights.region_colour_weight * terms["region_colour"]
                out.update({key: value.detach() for key, value in terms.items()})
            total = loss * share if total is None else total + loss * share
        if total is None:
            raise ValueError("loss.glee_weight 0 trains on detection batches only, and this step has none: set "
                             "data.task_weights to detection alone")
        out["loss"], out["glee_loss"] = total, glee_total
        return out

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Replace ``output_dir/checkpoint-last`` atomically (model folder + optimizer/scheduler/step/history)."""
        def write(tmp: Path) -> None:
            self.unwrapped.save_pretrained(tmp)
            heads = {name: self.accelerator.unwrap_model(head).state_dict()
                     for name, head in self._auxiliary_heads().items()}
            torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "history": json.dumps(self.history),
                        "config": json.dumps(self.config.to_dict()), **heads}, tmp / STATE_NAME)

        if not self.accelerator.is_main_process:
            return self.output_dir / LAST
        return save_atomically(self.output_dir / LAST, write)

    def resume(self) -> bool:
        """Load ``output_dir/checkpoint-last`` if it exists; True when resumed."""
        directory = self.output_dir / LAST
        recover_interrupted(directory)
        if not directory.is_dir():
            return False
        state = load_trainer_state(directory)
        check_same_run(directory, state["config"], self.config.to_dict(), RESUME_FREE)
        model = GleeModel.from_pretrained(directory)
        self.unwrapped.load_state_dict(model.state_dict())
        for name, head in self._auxiliary_heads().items():  # the same loss settings: the same heads
            self.accelerator.unwrap_model(head).load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = json.loads(state["history"])
        return True

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (GLEE's losses only, no auxiliary term) over ``val_batches`` fixed batches (train-mode heads,
        no DN) and the callbacks."""
        metrics: dict[str, float] = {}
        self.model.eval()
        if self.val_source is not None and self.config.val_batches > 0:
            generator = torch.Generator(device=self.accelerator.device).manual_seed(0)
            rng = np.random.default_rng(0)
            values, val_steps = [], StepSamples(self.val_source, self.config.batch_size)
            self.unwrapped.predictor.train()
            for i in range(self.config.val_batches):
                batches = self._batches(val_steps[i], rng)
                values.append({k: float(v) for k, v in self.batch_losses(batches, generator).items()})
            self.unwrapped.predictor.eval()
            if self.config.loss.glee_weight > 0:
                metrics["val_loss"] = float(np.mean([v["glee_loss"] for v in values]))
            if self.region_classifier is not None:
                for key in ("region_class", "region_accuracy", "region_colour"):
                    if any(key in v for v in values):
                        metrics[f"val_{key}"] = float(np.nanmean([v.get(key, np.nan) for v in values]))
        for callback in self.callbacks:
            metrics.update(callback(self.unwrapped, self.step))
        self.model.train()
        return metrics

    def _write_reports(self) -> None:
        if not self.accelerator.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "history.json").write_text(json.dumps(self.history, indent=1))
        save_loss_curve(self.output_dir / "loss_curve.png", [tuple(x) for x in self.history["train"]],
                        [tuple(x) for x in self.history["val"]], title="GLEE training loss")

    # ------------------------------------------------------------------ loop
    def train(self, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Run (or, with ``resume``, continue) the schedule of ``config.steps`` steps; ``stop_after`` ends this run
        early at that step without changing the schedule (the checkpoint then resumes the same run)."""
        config = self.config
        last = config.steps if stop_after is None else min(stop_after, config.steps)
        if resume:
            self.resume()
        self.model.train()
        acc = self.accelerator
        bar = tqdm(total=config.steps, initial=self.step, desc="train glee", disable=not acc.is_local_main_process,
                   dynamic_ncols=True)
        window: list[float] = []
        started = time.time()
        stream = self._sample_stream(self.step, last)
        while self.step < last:
            step = self.step
            rng = np.random.default_rng([config.seed, step, acc.process_index])
            generator = torch.Generator(device=acc.device).manual_seed(config.seed * 1_000_003 + step)
            batches = self._batches(next(stream), rng)
            losses = self.batch_losses(batches, generator)
            value = float(losses["loss"].detach())
            if not math.isfinite(value):  # before the step: the weights (and the last checkpoint) stay finite
                raise FloatingPointError(f"loss became {value} at step {step}; lower optim.lr or check the data")
            self.optimizer.zero_grad(set_to_none=True)
            acc.backward(losses["loss"])
            if config.optim.grad_clip > 0:  # every optimised parameter, the region head's too
                acc.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], config.optim.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            window.append(value)
            bar.update(1)
            if self.step % config.log_every == 0 or self.step == config.steps:
                self.history["train"].append([self.step, float(np.mean(window))])
                self.history["components"].append(
                    [self.step, {k: float(v) for k, v in losses.items() if k not in ("loss", "glee_loss")}])
                bar.set_postfix(loss=f"{np.mean(window):.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                window = []
            if config.eval_every and (self.step % config.eval_every == 0 or self.step == config.steps):
                metrics = self.evaluate()
                if "val_loss" in metrics:
                    self.history["val"].append([self.step, metrics["val_loss"]])
                self.history["metrics"].append([self.step, metrics])
                bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                self._write_reports()
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        self.history["seconds"] = self.history.get("seconds", 0.0) + time.time() - started
        self._write_reports()
        self.save_checkpoint()
        model_dir = self.output_dir / "model"
        if acc.is_main_process:
            save_atomically(model_dir, lambda tmp: self.unwrapped.save_pretrained(tmp))
        acc.wait_for_everyone()
        return TrainResult(self.output_dir, model_dir, self.step, self.history)


def sources_from_config(config: TrainConfig) -> tuple[SampleSource, SampleSource | None]:
    """Training and validation sample sources named by ``config.data``."""
    from train.glee.samples import CocoSource, ShapeworldSource

    data = config.data
    if data.source == "shapeworld":
        return tuple(ShapeworldSource(split, data.seed, dict(data.task_weights), negative_referring=data.negative_referring,
                                      video_frames=data.video_frames) for split in ("train", "val"))
    if data.source == "coco":
        from train.data.readers import read_coco

        for name in ("negative_referring", "video_frames"):
            if getattr(data, name):
                raise ValueError(f"data.{name} is a share of shapeworld samples; a coco source has none")
        if not data.coco_json or not data.image_root:
            raise ValueError("data.source coco needs data.coco_json and data.image_root")
        train = CocoSource(read_coco(data.coco_json, data.image_root), seed=data.seed)
        val = CocoSource(read_coco(data.val_coco_json, data.image_root), seed=data.seed, flip=False) \
            if data.val_coco_json else None
        return train, val
    raise ValueError(f"data.source must be 'shapeworld' or 'coco', got {data.source!r}")
