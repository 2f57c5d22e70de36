"""Train a tiny GLEE-LLM on shapeworld conversations (the mllm learning proof; a plain loop).

A word-level tokenizer and a random-weight tiny LLaVA are built locally, the bundled nano GLEE stays
frozen; the VLM and the projectors train on reasoning, referring, two-object and region-captioning
conversations (:mod:`train.data.shapeworld.chat`). GLEE's proposals of each training image are computed
once (a frozen GLEE gives the same every step).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from glee_core import processing
from glee_core.processing import box_cxcywh_to_xyxy
from glee_core.modeling.glee import GleeModel
from glee_core.modeling.text_encoder import encode_categories
from mllm.batching import collate
from mllm.config import GleeLLMConfig, LossWeights
from mllm.io import load_gleellm, save_gleellm
from mllm.modeling import GleeLLM
from mllm.objects import ObjectTokens
from mllm.tiny import tiny_llava, word_tokenizer
from train.data.shapeworld import CATEGORY_NAMES, generate_scene, scene_seed
from train.data.shapeworld.chat import KINDS, SegChat, scene_chats
from train.data.shapeworld.scene import Scene


@dataclass
class MllmRecipe:
    """Everything the learning proof depends on (saved next to the model).

    Until ``glee_from_step`` no ``[SEG]`` goes through GLEE (token CE and the cheap pointer loss only: the LLM
    first learns which object a question means); from then on ``mask_prompts_per_step`` of them do.
    """

    train_scenes: int = 800
    seed: int = 0
    steps: int = 1600
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.0
    mask_prompts_per_step: int = 3
    glee_from_step: int = 1000
    kind_weights: dict[str, float] = field(default_factory=lambda: {"reasoning": 0.4, "referring": 0.25,
                                                                   "pair": 0.15, "caption": 0.2})
    num_objects: int = 10
    image_size: int = 64
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    glee: str = "nano"
    save_every: int = 200


@dataclass
class TrainingExample:
    image: np.ndarray
    chat: SegChat
    objects: ObjectTokens


def proposal_boxes(objects: ObjectTokens, height: int, width: int) -> np.ndarray:
    """xyxy pixel boxes [K, 4] of one image's object tokens."""
    return (box_cxcywh_to_xyxy(objects.boxes[0]) * torch.tensor([width, height] * 2)).numpy()


def build_model(recipe: MllmRecipe, texts: list[str]) -> GleeLLM:
    torch.manual_seed(recipe.seed)
    tokenizer = word_tokenizer(texts)
    vlm, processor = tiny_llava(tokenizer, image_size=recipe.image_size, hidden=recipe.hidden,
                                layers=recipe.layers, heads=recipe.heads)
    config = GleeLLMConfig(num_objects=recipe.num_objects, object_categories=list(CATEGORY_NAMES), system_prompt="",
                           max_length=256, max_new_tokens=24, train_mask_prompts=recipe.mask_prompts_per_step,
                           loss=LossWeights(), base_glee=recipe.glee)
    model = GleeLLM.build(vlm, processor, GleeModel.from_pretrained(recipe.glee), config)
    init_word_embeddings(model)
    return model


@torch.no_grad()
def init_word_embeddings(model: GleeLLM) -> None:
    """Start each word's LLM embedding from GLEE's own text tower: the word's class embedding (what GLEE grounds
    the word as), through a fixed random orthogonal map to the LLM width, at the embeddings' scale. A random-init
    LLM then begins with words GLEE can ground, instead of learning their meaning from scratch."""
    tokenizer, embedding = model.processor.tokenizer, model.vlm.get_input_embeddings().weight
    words = [(token, index) for token, index in tokenizer.get_vocab().items()
             if token.isalpha() and index not in tokenizer.all_special_ids]
    glee = model.glee
    ids, mask = glee._tokenize([word for word, _ in words])
    classes = encode_categories(glee.text_encoder, glee.lang_projection, ids, mask).class_embeddings
    classes = (classes - classes.mean(0)) / classes.std(0).clamp(min=1e-6)
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(embedding.shape[1], classes.shape[1], generator=generator))[0]
    rows = torch.tensor([index for _, index in words])
    embedding[rows] = (classes @ basis.T * embedding.std()).to(embedding.dtype)


def training_examples(model: GleeLLM, scenes: list[Scene], seed: int, progress: bool = True) -> list[TrainingExample]:
    """Every conversation of every scene, with the scene's precomputed object tokens."""
    rng = np.random.default_rng(seed)
    examples = []
    with torch.no_grad():
        for scene in tqdm(scenes, desc="GLEE proposals", disable=not progress):
            objects = model.propose(processing.preprocess([scene.image], model.glee.config.input))
            boxes = proposal_boxes(objects, *scene.image.shape[:2])
            examples += [TrainingExample(scene.image, chat, objects) for chat in scene_chats(scene, rng, boxes)]
    return examples


def vocabulary_texts(scenes: list[Scene], seed: int) -> list[str]:
    """Every question and answer the training scenes give (captions for every object), for the tokenizer."""
    rng = np.random.default_rng(seed)
    texts = ["USER: ASSISTANT:"]
    for scene in scenes:
        boxes = np.stack([o.box for o in scene.objects])
        texts += [text for chat in scene_chats(scene, rng, boxes) for turn in chat.turns for text in turn]
    return texts


class KindSampler:
    """Draws examples so that each kind of conversation appears with its recipe weight."""

    def __init__(self, examples: list[TrainingExample], weights: dict[str, float], seed: int):
        self.by_kind = {k: [e for e in examples if e.chat.kind == k] for k in KINDS}
        kinds = [k for k in KINDS if self.by_kind[k] and weights.get(k, 0) > 0]
        if not kinds:
            raise ValueError("no training example of any weighted kind")
        total = sum(weights[k] for k in kinds)
        self.kinds, self.p = kinds, [weights[k] / total for k in kinds]
        self.rng = np.random.default_rng(seed)

    def draw(self, n: int) -> list[TrainingExample]:
        kinds = self.rng.choice(len(self.kinds), size=n, p=self.p)
        return [self.by_kind[self.kinds[k]][int(self.rng.integers(len(self.by_kind[self.kinds[k]])))] for k in kinds]


def make_batch(model: GleeLLM, examples: list[TrainingExample]):
    conversations = [model.encode(e.image, e.chat.turns) for e in examples]
    return collate(conversations, [e.image for e in examples], model.glee.config.input,
                   model.processor.tokenizer.pad_token_id, seg_masks=[e.chat.masks for e in examples],
                   objects=[e.objects for e in examples])


def lr_at(step: int, recipe: MllmRecipe) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(recipe: MllmRecipe, out_dir: str | Path, *, init_from: str | Path | None = None, progress: bool = True,
          on_save: Callable[[GleeLLM, int], None] | None = None) -> tuple[GleeLLM, list[dict]]:
    """Train per ``recipe``; saves the model (and ``history.json``) into ``out_dir`` every ``save_every`` steps
    and at the end. ``init_from`` continues from a saved GleeLLM folder (its tokenizer and weights; the
    optimizer starts afresh). ``on_save(model, step)`` runs after each save (e.g. a validation callback)."""
    out_dir = Path(out_dir)
    scenes = [generate_scene(scene_seed("train", i, recipe.seed), split="train") for i in range(recipe.train_scenes)]
    if init_from is not None:
        model = load_gleellm(init_from)
        model.config.train_mask_prompts = recipe.mask_prompts_per_step
    else:
        model = build_model(recipe, vocabulary_texts(scenes, recipe.seed))
    sampler = KindSampler(training_examples(model, scenes, recipe.seed, progress), recipe.kind_weights, recipe.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    history: list[dict] = []
    model.train()
    bar = tqdm(range(recipe.steps), desc="train mLLM", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        start = time.perf_counter()
        model.config.train_mask_prompts = recipe.mask_prompts_per_step if step >= recipe.glee_from_step else 0
        out = model(make_batch(model, sampler.draw(recipe.batch_size)))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        row = {"step": step + 1, "seconds": time.perf_counter() - start,
               **{k: float(getattr(out, f"{k}_loss").detach()) for k in ("ce", "mask_bce", "mask_dice", "select", "pointer")},
               "loss": float(out.loss.detach())}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", ce=f"{row['ce']:.3f}", dice=f"{row['mask_dice']:.3f}")
        if (step + 1) % recipe.save_every == 0 or step + 1 == recipe.steps:
            save(model, recipe, history, out_dir)
            if on_save is not None:
                on_save(model, step + 1)
                model.train()
    return model, history


def save(model: GleeLLM, recipe: MllmRecipe, history: list[dict], out_dir: Path) -> None:
    save_gleellm(model, out_dir)
    (out_dir / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    (out_dir / "history.json").write_text(json.dumps(history))
