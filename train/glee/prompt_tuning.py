"""Prompt tuning: learn a category vocabulary for a new domain from a handful of labelled images.

Only the two tensors of a :class:`~glee_core.vocabulary.Vocabulary` are optimised — the class embeddings (the
decoder's classifier, one row per name) and the fusion tokens (the early-fusion language input, the tokens of
every name) — against GLEE's own training losses (:class:`~train.glee.criterion.SetCriterion`: Hungarian
matching, focal class loss, box L1 + GIoU, and the mask losses when the data have segmentations). Every model
parameter and buffer stays as it is: the model runs in eval mode (frozen BatchNorm statistics, no dropout) except
its decoder head, whose training mode only adds the per-layer predictions the losses need; parameters are set to
``requires_grad=False`` for the run and a step that finds a gradient on any of them fails.

The result keeps the model's text fingerprint, so the saved file (``Vocabulary.save``, a few KB) runs only on the
model it was tuned for; use it like any category list: ``GleePredictor(model).predict(image, vocabulary)``.

Which rows are learnt: by default the names the data annotate; names of a given vocabulary that the data do not
annotate stay fixed and still compete in every forward (as at inference, where the whole vocabulary is the
prompt). ``tune`` picks the rows explicitly, e.g. only a new name while the known names stay as encoded.
Every step prompts the whole vocabulary in its order (no random subsets of names as in GLEE training): the tuned
file is used as one prompt, so tuning sees exactly what inference will.

Run it with ``gleekit tune-vocab`` (train/cli.py).

What it reaches with the bundled nano model (shapeworld stars labelled with a made-up name, "blicket"; tuned on 50
train-split scenes of data seed 7, 150 steps of 4 images, lr 0.05; box AP50 of "blicket" on 100 held-out test-split
scenes of seed 2026): stage 13 (float16; stage 14, shipped, not remeasured) 0.115 -> 0.934 (32 images, 48 steps of
2: 0.115 -> 0.909); stage 12 0.118 -> 0.918 (32 images: 0.881); stage 11 0.128 -> 0.880 (32 images: 0.845); stage 10
0.154 -> 0.892 (its float32 training weights; 32 images, 48 steps of 2, float16: 0.155 -> 0.845); stage 7 (whose
backbone was first taught shapes) 0.152 -> 0.706; stage 5 0.287 -> 0.453; the figures below are stage 3's: 0.235 ->
0.453 as a one-name vocabulary; 0.241 -> 0.396 as one name of the full 8-shape vocabulary with only its rows learnt;
0.241 -> 0.368 with all 8 names learnt (their mean 0.293 -> 0.339). Nano's own, trained name "star" scores 0.320 on
those scenes (stage 3). The ceiling is the frozen model, not the prompt: stage 3's decoder queries carried little
shape identity (a logistic-regression probe for "star" on them, fitted on the same 50 scenes, scores 0.29 AP50 held
out; 12 extra learnt fusion tokens or a class-loss-only objective did not help; the tuned prompt reaches only ~0.4
AP50 on its own tuning images).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from glee_core.modeling.glee import GleeModel
from glee_core.modeling.tokenizer import tokenize
from glee_core.vocabulary import Vocabulary
from train.data.records import Dataset
from train.glee.collate import collate
from train.glee.criterion import LossWeights, SetCriterion
from train.glee.matcher import HungarianMatcher
from train.glee.samples import CocoSource, TrainSample


class TunedVocabulary(NamedTuple):
    """``vocabulary``: the tuned :class:`Vocabulary`; ``history``: (step, loss) per optimizer step (1-based)."""

    vocabulary: Vocabulary
    history: list[tuple[int, float]]


@dataclass(frozen=True)
class TuningConfig:
    """Settings of :func:`tune_vocabulary` (see its docstring)."""

    steps: int = 150
    lr: float = 0.05
    batch_size: int = 4
    seed: int = 0
    num_points: int = 1024
    flip: bool = True
    grad_clip: float = 1.0
    min_lr_ratio: float = 0.1

    def check(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {self.num_points}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0: no clipping), got {self.grad_clip}")


# ---------------------------------------------------------------------------------------------------- data
def load_dataset(data: str | Path | Dataset, images: str | Path | None = None) -> Dataset:
    """A COCO-format dataset: ``data`` already read, or a json path read with ``images`` as the image folder.

    Raises ValueError for a dataset without images or without any (non-crowd) annotation, or with two
    categories of the same name, and the readers' errors (DatasetFormatError, MissingImageError) for bad files.
    """
    if isinstance(data, Dataset):
        dataset = data
    else:
        from train.data.readers import read_coco

        if images is None:
            raise ValueError("a COCO json needs the folder of its images (images=...)")
        dataset = read_coco(data, images)
    where = "" if isinstance(data, Dataset) else f" {data}"
    if not dataset.images:
        raise ValueError(f"the dataset{where} has no images: prompt tuning needs a few labelled images")
    if not any(not inst.iscrowd for record in dataset.images for inst in record.instances):
        raise ValueError(f"the dataset{where} has {len(dataset.images)} images but no (non-crowd) annotation: "
                         "prompt tuning needs labelled objects")
    names = dataset.category_names()
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"the dataset{where} has several categories named {repeated}; names must be unique")
    return dataset


def annotated_names(dataset: Dataset) -> list[str]:
    """The dataset's category names that have at least one non-crowd annotation, in category order."""
    used = {inst.category_id for record in dataset.images for inst in record.instances if not inst.iscrowd}
    return [name for cid, name in dataset.categories.items() if cid in used]


def initial_vocabulary(model: GleeModel, vocabulary: Vocabulary | Sequence[str] | None, dataset: Dataset
                       ) -> Vocabulary:
    """The vocabulary to start from: given, encoded from the given names, or (None) from the data's categories.

    Raises VocabularyMismatchError for a vocabulary of another model, ValueError when a data category is not one
    of its names.
    """
    if vocabulary is None:
        vocabulary = dataset.category_names()
    if isinstance(vocabulary, Vocabulary):
        vocabulary.check_fingerprint(model.text_fingerprint())
        if vocabulary.class_embeddings.shape[1] != model.config.hidden_dim:
            raise ValueError(f"vocabulary embeddings have width {vocabulary.class_embeddings.shape[1]}, "
                             f"the model {model.config.hidden_dim}")
        start = vocabulary
    else:
        if isinstance(vocabulary, str):
            raise ValueError(f"names must be a list of strings, got the single string {vocabulary!r}")
        names = list(vocabulary)
        if not names:
            raise ValueError("the vocabulary is empty: give at least one category name")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"the vocabulary names {repeated} more than once; names must be unique")
        with torch.no_grad():
            start = model.encode_vocabulary(names)
    missing = [name for name in dataset.category_names() if name not in start.names]
    if missing:
        raise ValueError(f"the data's categories {missing} are not in the vocabulary {list(start.names)}; "
                         "add them to the names to tune (or rename them in the data)")
    return start


def token_spans(model: GleeModel, names: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of each name's tokens in a vocabulary's ``fusion_tokens`` (BOS..EOS, names concatenated)."""
    _, mask = tokenize(list(names), max_length=model.config.text.max_length)
    ends = mask.sum(1).cumsum(0).tolist()
    return [(end - int(n), end) for end, n in zip(ends, mask.sum(1).tolist())]


class _Rows:
    """A vocabulary tensor whose chosen rows are a trainable parameter and whose other rows stay fixed."""

    def __init__(self, base: torch.Tensor, rows: list[int]):
        self.base = base.detach().float().clone()
        self.index = torch.tensor(rows, dtype=torch.long, device=self.base.device)
        self.param = torch.nn.Parameter(self.base[self.index].clone())

    def full(self) -> torch.Tensor:
        return self.base.index_copy(0, self.index, self.param)


# ---------------------------------------------------------------------------------------------------- tuning
@contextlib.contextmanager
def frozen(model: GleeModel) -> Iterator[GleeModel]:
    """The model with every parameter frozen, in eval mode except its decoder head (training mode there only adds
    the per-layer predictions and masks the losses need; the decoder has no dropout); ``.grad`` cleared on entry,
    train/eval modes and ``requires_grad`` flags restored on exit."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    try:
        with restored_modes(model):
            model.requires_grad_(False)
            model.eval()
            model.predictor.train()
            yield model
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])


@contextlib.contextmanager
def restored_modes(model: GleeModel) -> Iterator[GleeModel]:
    """The model, with every module's train/eval mode put back as it was on exit."""
    modes = {name: module.training for name, module in model.named_modules()}
    try:
        yield model
    finally:
        for name, module in model.named_modules():
            module.train(modes[name])


def _criterion(num_points: int, weights: LossWeights) -> SetCriterion:
    """GLEE's training criterion with ``num_points`` sampled mask points (matching and losses alike)."""
    return SetCriterion(HungarianMatcher(num_points=num_points), weights=weights, num_points=num_points)


class _Samples:
    """Detection samples of the dataset with labels re-indexed into the vocabulary's names; step s, slot j reads
    the images in a fresh seeded permutation per epoch (flips as :class:`CocoSource` does them)."""

    def __init__(self, dataset: Dataset, names: Sequence[str], seed: int, flip: bool):
        self.source = CocoSource(dataset, seed=seed, flip=flip)
        self.names = list(names)
        self.to_vocab = np.array([self.names.index(n) for n in self.source.category_names], dtype=np.int64)
        self.count = len(dataset.images)
        self.seed = seed

    def sample(self, index: int) -> TrainSample:
        """Image ``index % count`` (flipped or not by the seed and ``index``), labelled with vocabulary indices."""
        s = self.source.sample(index)
        return TrainSample(image=s.image, task="detection", names=self.names, labels=self.to_vocab[s.labels],
                           boxes=s.boxes, masks=s.masks)

    def batch(self, step: int, batch_size: int) -> list[TrainSample]:
        out = []
        for position in range(step * batch_size, (step + 1) * batch_size):
            epoch, slot = divmod(position, self.count)
            order = np.random.default_rng([self.seed, epoch, 7]).permutation(self.count)
            out.append(self.sample(epoch * self.count + int(order[slot])))
        return out


def tune_vocabulary(
    model: GleeModel,
    data: str | Path | Dataset,
    images: str | Path | None = None,
    vocabulary: Vocabulary | Sequence[str] | None = None,
    *,
    tune: Sequence[str] | None = None,
    steps: int = TuningConfig.steps,
    lr: float = TuningConfig.lr,
    batch_size: int = TuningConfig.batch_size,
    seed: int = TuningConfig.seed,
    num_points: int = TuningConfig.num_points,
    flip: bool = TuningConfig.flip,
    loss_weights: LossWeights = LossWeights(),
    progress: bool = True,
    curve: str | Path | None = None,
) -> TunedVocabulary:
    """Learn the category prompt of ``vocabulary`` from a COCO-format dataset; the model stays unchanged.

    Args:
        model: the GLEE model the vocabulary is for (its weights are not touched; its train/eval modes and
            ``requires_grad`` flags are restored afterwards, its parameters' ``.grad`` are cleared).
        data: a COCO instances json (with ``images``, its image folder) or a :class:`Dataset` already read.
        vocabulary: where to start: a :class:`Vocabulary` of this model (e.g. a loaded tuned file), a list of
            names (encoded by the model), or None = the data's category names. Every data category must be a name.
        tune: the names whose rows (class embedding + their fusion tokens) are learnt; default: the names the data
            annotate. The other rows stay bit-identical.
        steps, lr, batch_size, seed: Adam steps (cosine decay to ``0.1 × lr``, gradient norm clipped at 1), peak
            learning rate, images per step, and the seed of image order, flips and the loss's point sampling (the
            same arguments give the same vocabulary on the same machine).
        num_points: mask points per object in the matcher and the mask losses.
        flip: random horizontal flips of the training images.
        loss_weights: weights of the loss terms (default: the official GLEE weights).
        progress: show a tqdm bar (with the running loss).
        curve: if given, write the loss curve there as a PNG (train/curves.py).

    Returns:
        (tuned vocabulary with the model's fingerprint, loss history [(step, loss)]).

    Raises:
        ValueError: bad settings, an empty or unlabelled dataset, data categories missing from the vocabulary,
            ``tune`` naming unknown names. VocabularyMismatchError: a vocabulary from another model.
    """
    config = TuningConfig(steps=steps, lr=lr, batch_size=batch_size, seed=seed, num_points=num_points, flip=flip)
    config.check()
    dataset = load_dataset(data, images)
    start = initial_vocabulary(model, vocabulary, dataset)
    names = list(start.names)
    tune = annotated_names(dataset) if tune is None else list(tune)
    unknown = [n for n in tune if n not in names]
    if unknown or not tune:
        raise ValueError(f"tune must name some of the vocabulary's names {names}, got {tune}")
    rows = sorted(names.index(n) for n in set(tune))
    token_rows = list(range(start.fusion_tokens.shape[0]))
    if len(rows) < len(names):  # only some names: find their tokens
        spans = token_spans(model, names)
        if spans[-1][1] != len(token_rows):
            raise ValueError(f"the vocabulary has {len(token_rows)} fusion tokens but its names tokenize to "
                             f"{spans[-1][1]}: its tokens cannot be told apart by name, so tune all its names")
        token_rows = [t for r in rows for t in range(*spans[r])]
    device = model.device
    embeddings = _Rows(start.class_embeddings.to(device), rows)
    tokens = _Rows(start.fusion_tokens.to(device), token_rows)
    fingerprint = model.text_fingerprint()

    samples = _Samples(dataset, names, config.seed, config.flip)
    criterion = _criterion(config.num_points, loss_weights)
    params = [embeddings.param, tokens.param]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: config.min_lr_ratio + (1 - config.min_lr_ratio)
                                                 * 0.5 * (1 + math.cos(math.pi * s / config.steps)))
    generator = torch.Generator(device=device).manual_seed(config.seed)
    history: list[tuple[int, float]] = []

    with frozen(model):
        bar = tqdm(range(config.steps), desc="tune vocabulary", disable=not progress, unit="step")
        for step in bar:
            batch = collate(samples.batch(step, config.batch_size), model.config.input).to(device)
            vocab = Vocabulary(names, embeddings.full(), tokens.full(), fingerprint)
            output = model(batch.images, categories=vocab)
            loss = criterion(output.decoder, batch.targets, generator=generator)["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at step {step + 1}; lower the lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            leaked = [name for name, p in model.named_parameters() if p.grad is not None]
            if leaked:
                raise RuntimeError(f"prompt tuning must not train the model, but {leaked[:3]} got gradients")
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            schedule.step()
            history.append((step + 1, float(loss.detach())))
            bar.set_postfix(loss=f"{history[-1][1]:.3f}")
    if curve is not None:
        from train.curves import save_loss_curve

        save_loss_curve(curve, history, title=f"prompt tuning of {len(rows)} of {len(names)} names")
    with torch.no_grad():
        tuned = Vocabulary(names, embeddings.full().detach().cpu(), tokens.full().detach().cpu(), fingerprint)
    return TunedVocabulary(tuned, history)


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def vocabulary_loss(model: GleeModel, vocabulary: Vocabulary | Sequence[str] | None, data: str | Path | Dataset,
                    images: str | Path | None = None, *, batch_size: int = TuningConfig.batch_size,
                    num_points: int = TuningConfig.num_points, loss_weights: LossWeights = LossWeights(),
                    seed: int = 0) -> float:
    """The tuning loss of ``vocabulary`` (as in :func:`tune_vocabulary`) averaged over every image of the dataset,
    in file order, without flips and with a fixed seed: a noise-free before/after figure on the same images
    (a training step's loss moves more with which images it drew than with the vocabulary)."""
    dataset = load_dataset(data, images)
    vocab = initial_vocabulary(model, vocabulary, dataset)
    samples = _Samples(dataset, vocab.names, seed, flip=False)
    criterion = _criterion(num_points, loss_weights)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    total = 0.0
    with frozen(model):
        for start in range(0, samples.count, batch_size):
            chunk = [samples.sample(i) for i in range(start, min(start + batch_size, samples.count))]
            batch = collate(chunk, model.config.input).to(model.device)
            output = model(batch.images, categories=vocab)
            total += float(criterion(output.decoder, batch.targets, generator=generator)["loss"]) * len(chunk)
    return total / samples.count


def ground_truth(dataset: Dataset) -> dict:
    """The dataset as a COCO annotation dict (boxes only) for :func:`eval.coco_metrics.coco_scores`."""
    images, annotations = [], []
    for record in dataset.images:
        images.append({"id": record.image_id, "width": record.width, "height": record.height})
        for k, inst in enumerate(record.instances):
            x1, y1, x2, y2 = (float(v) for v in inst.box)
            annotations.append({"id": len(annotations) + 1, "image_id": record.image_id,
                                "category_id": inst.category_id, "iscrowd": int(inst.iscrowd),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    categories = [{"id": cid, "name": name} for cid, name in dataset.categories.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


@torch.no_grad()
def evaluate_vocabulary(model: GleeModel, vocabulary: Vocabulary | Sequence[str], data: str | Path | Dataset,
                        images: str | Path | None = None, *, progress: bool = False) -> dict[str, float]:
    """Box AP50 of category prompts with ``vocabulary`` on a COCO-format dataset: ``{name: AP50}`` for every data
    category with annotations (COCOeval, top detections of the predictor, no score threshold) and ``"all"``, the
    mean over them. Detections of vocabulary names that are not data categories are left out."""
    from eval.coco_metrics import coco_scores
    from glee_core.image_io import load_image
    from glee_core.predictor import GleePredictor

    dataset = load_dataset(data, images)
    if not isinstance(vocabulary, Vocabulary):
        vocabulary = model.encode_vocabulary(list(vocabulary))
    id_of = {name: cid for cid, name in dataset.categories.items()}
    to_id = {k: id_of.get(name) for k, name in enumerate(vocabulary.names)}
    results = []
    with restored_modes(model):  # the predictor puts the model in eval mode
        predictor = GleePredictor(model)
        for record in tqdm(dataset.images, desc="evaluate vocabulary", disable=not progress, unit="image"):
            dets = predictor.predict(load_image(record.path), vocabulary)
            for r in dets.to_coco(record.image_id, {k: (v if v is not None else -1) for k, v in to_id.items()}):
                if r["category_id"] != -1:
                    results.append(r)
    gt = ground_truth(dataset)
    scores: dict[str, float] = {}
    for name in annotated_names(dataset):
        cid = id_of[name]
        subset = {**gt, "annotations": [a for a in gt["annotations"] if a["category_id"] == cid]}
        scores[name] = coco_scores(subset, [r for r in results if r["category_id"] == cid], "bbox").stats["AP50"]
    scores["all"] = coco_scores(gt, results, "bbox").stats["AP50"]
    return scores
