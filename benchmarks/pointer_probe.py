"""Can a question pick its object from the object tokens? A probe of what a GLEE model gives the mLLM's pointer.

    python benchmarks/pointer_probe.py [--model nano] [--train-scenes 800] [--val-scenes 150]

For shapeworld reasoning and referring questions with one target, GLEE proposes the K object tokens of the image
(:func:`mllm.objects.propose_objects`, as the GLEE-LLM does) and the target is the token the mLLM's pointer loss
names (:func:`mllm.losses.pointer_targets`). A small two-tower model — a bag-of-words MLP for the question, an MLP
for each object's content, a dot product — is trained with cross-entropy on train-split scenes and scored on
val-split scenes, for several choices of the content: GLEE's query alone; + the region features under its mask
(mask features, mean colour, silhouette); + GLEE's probability for each shape name; the mean colour and those
probabilities alone. It needs no LLM: a low accuracy means GLEE's tokens lack what the questions ask about, a high
one with a low mLLM pointer accuracy means the LLM is what fails. A bag of words cannot read word order, so
spatial and ordinal expressions stay low here whatever GLEE gives.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from tqdm import tqdm

from glee_core import processing
from glee_core.modeling.glee import GleeModel
from mllm.batching import mask_target
from mllm.losses import pointer_targets
from mllm.objects import ObjectTokens, propose_objects
from train.data.shapeworld.scene import SHAPES
from train.mllm.data_config import ShapeworldChats

SILHOUETTE = 8
NUM_OBJECTS = 10


@dataclass
class Question:
    text: str
    kind: str
    target: int          # index of the pointed object token
    objects: ObjectTokens  # [1, K, ...] of its image


def collect(model: GleeModel, split: str, num_scenes: int, seed: int, *, progress: bool = True) -> list[Question]:
    """Single-target questions of ``num_scenes`` scenes (three draws per scene) whose target an object token shows."""
    source = ShapeworldChats(num_scenes, ["reasoning", "referring"], seed=seed, split=split)
    proposals: dict[int, tuple[ObjectTokens, processing.ImageBatch]] = {}
    questions = []
    for index in tqdm(range(3 * num_scenes), desc=f"{split} questions", disable=not progress):
        sample = source.sample(index)
        if len(sample.masks) != 1:
            continue
        scene = index % num_scenes
        if scene not in proposals:
            batch = processing.preprocess([sample.image], model.config.input)
            with torch.no_grad():
                proposals[scene] = (propose_objects(model, batch.tensor, batch.image_sizes, list(SHAPES), NUM_OBJECTS,
                                                    silhouette_size=SILHOUETTE, class_scores=True), batch)
        objects, batch = proposals[scene]
        target = mask_target(sample.masks[0], batch.image_sizes[0], batch.padded_size)[None]
        best, shown = pointer_targets(objects.mask_logits, target)
        if bool(shown[0]):
            questions.append(Question(sample.turns[0][0], sample.meta["kind"], int(best[0]), objects))
    return questions


def content_variants(mask_dim: int) -> dict[str, Callable[[ObjectTokens], torch.Tensor]]:
    """Name -> the object content [K, D] a variant gives the probe (box and score always appended)."""
    colour = slice(mask_dim, mask_dim + 3)
    plain = mask_dim + 3 + SILHOUETTE ** 2  # regions = mask features, colour, silhouette, class probabilities
    return {
        "query": lambda o: o.queries[0],
        "query + region": lambda o: torch.cat([o.queries[0], o.regions[0, :, :plain]], -1),
        "query + region + class probs": lambda o: torch.cat([o.queries[0], o.regions[0]], -1),
        "colour + class probs": lambda o: torch.cat([o.regions[0, :, colour], o.regions[0, :, plain:]], -1),
    }


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def probe(train: list[Question], val: list[Question], content: Callable[[ObjectTokens], torch.Tensor], *,
          steps: int = 3000, hidden: int = 128, seed: int = 0) -> tuple[float, dict[str, float]]:
    """Held-out pointer accuracy of the two-tower probe, overall and per question kind."""
    vocabulary = {w: i for i, w in enumerate(sorted({w for q in train for w in _words(q.text)}))}

    def tensors(questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bags = torch.zeros(len(questions), len(vocabulary))
        for row, q in enumerate(questions):
            bags[row, [vocabulary[w] for w in _words(q.text) if w in vocabulary]] = 1.0
        objects = torch.stack([torch.cat([content(q.objects), q.objects.boxes[0], q.objects.scores[0, :, None]], -1)
                               for q in questions])
        return bags, objects.float(), torch.tensor([q.target for q in questions])

    torch.manual_seed(seed)
    bags, objects, targets = tensors(train)
    ask = nn.Sequential(nn.Linear(bags.shape[1], hidden), nn.GELU(), nn.Linear(hidden, hidden))
    see = nn.Sequential(nn.LayerNorm(objects.shape[-1]), nn.Linear(objects.shape[-1], hidden), nn.GELU(),
                        nn.Linear(hidden, hidden))
    optimizer = torch.optim.AdamW([*ask.parameters(), *see.parameters()], lr=2e-3, weight_decay=0.01)
    logits = lambda b, o: torch.einsum("nh,nkh->nk", ask(b), see(o))
    for _ in range(steps):
        pick = torch.randint(len(targets), (64,))
        loss = nn.functional.cross_entropy(logits(bags[pick], objects[pick]), targets[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    bags, objects, targets = tensors(val)
    with torch.no_grad():
        right = logits(bags, objects).argmax(-1) == targets
    kinds = [q.kind for q in val]
    per_kind = {k: float(right[[i for i, x in enumerate(kinds) if x == k]].float().mean()) for k in sorted(set(kinds))}
    return float(right.float().mean()), per_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nano", help="a bundled GLEE name or a model folder")
    parser.add_argument("--train-scenes", type=int, default=800)
    parser.add_argument("--val-scenes", type=int, default=150)
    parser.add_argument("--steps", type=int, default=3000, help="probe training steps (batch 64)")
    args = parser.parse_args()
    model = GleeModel.from_pretrained(args.model).eval()
    train, val = collect(model, "train", args.train_scenes, 0), collect(model, "val", args.val_scenes, 0)
    if not train or not val:
        raise SystemExit("no question whose target an object token shows; nothing to probe")
    table = Table(title=f"pointer probe, {args.model}: {len(train)} train / {len(val)} val questions "
                        f"({args.train_scenes} / {args.val_scenes} scenes); chance 1/{NUM_OBJECTS}")
    for column in ("object content", "val accuracy", "reasoning", "referring"):
        table.add_column(column, justify="left" if column == "object content" else "right")
    for name, content in content_variants(model.pixel_decoder.mask_features.out_channels).items():
        accuracy, per_kind = probe(train, val, content, steps=args.steps)
        by_kind = (f"{per_kind.get(k, float('nan')):.3f}" for k in ("reasoning", "referring"))
        table.add_row(name, f"{accuracy:.3f}", *by_kind)
    Console().print(table)


if __name__ == "__main__":
    main()
