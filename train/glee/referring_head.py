"""Training the optional referring head (:mod:`glee_core.modeling.referring_head`) on a frozen GLEE model.

1. :func:`collect_samples` runs the frozen model on shapeworld scenes, each with some of its referring
   expressions (positives) and some expressions of the same grammar that match nothing (negatives,
   ``negative_expressions``), and keeps, per expression, the head's inputs and which choices are right: every
   query whose box hits the referent (IoU >= 0.5, in original pixels), or "none" for a negative or a positive no
   query found.
2. :func:`train_head` fits the head on those samples (AdamW, :func:`referring_choice_loss`), reporting the
   held-out loss and choice accuracy as it goes.
3. :func:`attach_head` puts the head into the model (``config.referring_head``), which then saves and loads with
   it (``save_pretrained`` / ``from_pretrained``).

The GLEE weights do not change, so every other prompt's results stay the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from glee_core import processing
from glee_core.mask_ops import box_iou
from glee_core.modeling.glee import GleeModel
from glee_core.config import ReferringHeadConfig
from glee_core.modeling.referring_head import (EXTRA_FEATURES, ReferringHead, referring_choice_loss,
                                               referring_head_inputs, region_colours)
from glee_core.modeling.text_encoder import encode_expressions
from glee_core.structures import Expression

HIT_IOU = 0.5
SAMPLE_FIELDS = ("queries", "text", "text_valid", "positives", "is_negative")


@dataclass
class ReferringSamples:
    """N expressions' head inputs: ``queries`` [N, Q, C + 9], ``text`` [N, L, T] with ``text_valid`` [N, L]
    bool, ``positives`` [N, Q + 1] bool (right choices, 0 = none), ``is_negative`` [N] bool; ``kinds``: the
    expression kind (positives) or negative reason of each."""

    queries: torch.Tensor
    text: torch.Tensor
    text_valid: torch.Tensor
    positives: torch.Tensor
    is_negative: torch.Tensor
    kinds: list[str]

    def __len__(self) -> int:
        return len(self.kinds)

    def subset(self, index: torch.Tensor | slice) -> "ReferringSamples":
        rows = torch.arange(len(self))[index]
        return ReferringSamples(*(getattr(self, name)[rows] for name in SAMPLE_FIELDS),
                                [self.kinds[i] for i in rows.tolist()])

    @classmethod
    def concatenate(cls, parts: list["ReferringSamples"]) -> "ReferringSamples":
        length = max(p.text.shape[1] for p in parts)

        def pad(t: torch.Tensor) -> torch.Tensor:  # text [N, L, ...] to the longest L
            return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1]))

        return cls(torch.cat([p.queries for p in parts]), torch.cat([pad(p.text) for p in parts]),
                   torch.cat([pad(p.text_valid) for p in parts]), torch.cat([p.positives for p in parts]),
                   torch.cat([p.is_negative for p in parts]), [k for p in parts for k in p.kinds])

    def save(self, path: str | Path) -> None:
        torch.save({**{name: getattr(self, name) for name in SAMPLE_FIELDS}, "kinds": self.kinds}, path)

    @classmethod
    def load(cls, path: str | Path) -> "ReferringSamples":
        data = torch.load(path, weights_only=True)
        return cls(*(data[name] for name in SAMPLE_FIELDS), list(data["kinds"]))


@torch.no_grad()
def scene_samples(model: GleeModel, image: np.ndarray, expressions: list[str], referents: list[np.ndarray | None],
                  kinds: list[str]) -> ReferringSamples:
    """The head inputs of several expressions on one image (uint8 HWC); ``referents``: each expression's xyxy box
    in image pixels, None for a negative."""
    spec = model.config.input
    batch = processing.preprocess([image], spec, device=model.device)
    count = len(expressions)
    features = {level: f.expand(count, *f.shape[1:]) for level, f in model.encode_image(batch.tensor).items()}
    images = batch.tensor.expand(count, *batch.tensor.shape[1:])
    ids, mask = model._tokenize([Expression(e).normalized for e in expressions])
    encoding = encode_expressions(model.text_encoder, model.lang_projection, ids, mask)
    # the encoded tokens as prompt embeddings: the text path's forward, with the text encoded once for both uses
    out = model(images, expression_embeds=encoding.fusion_tokens, expression_mask=encoding.fusion_mask,
                image_features=features)
    queries = referring_head_inputs(out.query_embeds, out.pred_boxes, out.decoder.pred_logits, out.pred_scores,
                                    region_colours(images, out.pred_masks))
    length = int(encoding.fusion_mask.sum(1).max())
    crop = processing.valid_region(batch.image_sizes[0], batch.original_sizes[0], spec.lsj)
    positives = torch.zeros(count, queries.shape[1] + 1, dtype=torch.bool)
    for row, referent in enumerate(referents):
        if referent is not None:
            boxes = processing.scale_boxes(out.pred_boxes[row].float(), batch.padded_size, crop,
                                           batch.original_sizes[0], spec.lsj).cpu().numpy()
            positives[row, 1:] = torch.from_numpy(box_iou(boxes, np.asarray(referent, np.float32)[None])[:, 0]
                                                  >= HIT_IOU)
        if not positives[row].any():
            positives[row, 0] = True
    return ReferringSamples(queries.cpu(), encoding.fusion_tokens[:, :length].float().cpu(),
                            encoding.fusion_mask[:, :length].cpu(), positives,
                            torch.tensor([r is None for r in referents]), kinds)


def collect_samples(model: GleeModel, num_scenes: int, *, split: str = "train", seed: int = 0,
                    positives_per_scene: int = 4, negatives_per_scene: int = 4,
                    progress: bool = True) -> ReferringSamples:
    """Head samples from ``num_scenes`` shapeworld scenes of ``split`` under ``seed``: per scene up to
    ``positives_per_scene`` of its referring expressions (drawn at random) and up to ``negatives_per_scene``
    negatives."""
    from train.data.shapeworld import generate_scene, referring_expressions, scene_seed
    from train.data.shapeworld.referring import negative_expressions

    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    model.eval()
    parts = []
    for index in tqdm(range(num_scenes), desc="referring samples", disable=not progress):
        scene = generate_scene(scene_seed(split, index, seed), split=split)
        rng = np.random.default_rng([scene.seed, 23])
        found = referring_expressions(scene, rng)
        chosen = [found[i] for i in rng.permutation(len(found))[:positives_per_scene]]
        negatives = negative_expressions(scene, rng, negatives_per_scene)
        if not chosen and not negatives:
            continue
        parts.append(scene_samples(
            model, scene.image, [e.text for e in chosen] + [n.text for n in negatives],
            [scene.objects[e.target].box for e in chosen] + [None] * len(negatives),
            [e.kind for e in chosen] + [n.reason for n in negatives]))
    if not parts:
        raise ValueError(f"no expressions in {num_scenes} scenes of {split!r}")
    return ReferringSamples.concatenate(parts)


def evaluate_head(head: ReferringHead, samples: ReferringSamples, batch_size: int = 512) -> dict[str, float]:
    """Mean choice ``loss`` over ``samples``; the share of ``positives`` whose top choice is right (a query, or none
    when nothing was found), of positives whose top *query* is right (``positives, best query``: what referring
    Acc@0.5 counts, "none" aside) and of ``negatives`` answered none."""
    head.eval()
    right, query_right, losses = [], [], []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            part = samples.subset(slice(start, start + batch_size))
            choices = head(part.queries, part.text, part.text_valid)
            rows = torch.arange(len(part))
            losses.append(referring_choice_loss(choices, part.positives) * len(part))
            right.append(part.positives[rows, choices.argmax(-1)])
            query_right.append(part.positives[rows, choices[:, 1:].argmax(-1) + 1])
    right, query_right = torch.cat(right), torch.cat(query_right)
    negative = samples.is_negative

    def share(values: torch.Tensor) -> float:
        return float(values.float().mean()) if len(values) else float("nan")

    return {"loss": float(sum(losses)) / len(samples), "positives": share(right[~negative]),
            "positives, best query": share(query_right[~negative]), "negatives": share(right[negative])}


def glee_choice_accuracy(samples: ReferringSamples) -> float:
    """Share of the positives whose right choice is GLEE's own top query (the highest referring logit): what the
    model does without the head."""
    positive = ~samples.is_negative
    top = samples.queries[positive, :, samples.queries.shape[-1] - EXTRA_FEATURES + 4].argmax(-1) + 1
    return float(samples.positives[positive][torch.arange(int(positive.sum())), top].float().mean())


def train_head(head: ReferringHead, samples: ReferringSamples, *, steps: int = 3000, batch_size: int = 256,
               lr: float = 1e-3, weight_decay: float = 0.01, held_out: ReferringSamples | None = None,
               eval_every: int = 500, seed: int = 0, progress: bool = True) -> list[dict[str, float]]:
    """Fit ``head`` with AdamW and a cosine schedule; returns the history (``step``, mean ``loss`` since the last
    entry, and :func:`evaluate_head` on ``held_out`` when given), one entry per ``eval_every`` steps."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    history, losses = [], []
    bar = tqdm(range(1, steps + 1), desc="referring head", disable=not progress)
    for step in bar:
        head.train()
        part = samples.subset(torch.randint(len(samples), (batch_size,), generator=generator))
        loss = referring_choice_loss(head(part.queries, part.text, part.text_valid), part.positives)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % eval_every == 0 or step == steps:
            entry = {"step": step, "loss": float(np.mean(losses))}
            losses = []
            if held_out is not None:
                entry.update({f"held-out {k}": v for k, v in evaluate_head(head, held_out).items()})
            history.append(entry)
            bar.set_postfix({k: round(v, 3) for k, v in entry.items() if k != "step"})
    head.eval()
    return history


def new_head(model: GleeModel, config: ReferringHeadConfig | None = None) -> ReferringHead:
    """A freshly initialised head sized for ``model``."""
    return ReferringHead(model.config.hidden_dim, model.config.hidden_dim, config or ReferringHeadConfig())


def attach_head(model: GleeModel, head: ReferringHead, config: ReferringHeadConfig) -> GleeModel:
    """Put ``head`` into ``model`` (its config records the head, so it saves and loads with the model)."""
    model.config.referring_head = config
    model.referring_head = head.to(device=model.device)
    return model
