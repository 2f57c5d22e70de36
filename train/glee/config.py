"""Typed configuration of a GLEE training run, read from YAML (``gleekit train glee --config CONFIG.yaml``).

Every section is a dataclass; unknown keys are errors naming the key, so a typo never silently falls back to a
default. Defaults follow the official recipe (AdamW, weight decay 0.05, backbone lr × 0.1, the official loss
weights) except the learning rate and clipping, which suit training small models from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from train.config_io import YamlConfig
from train.glee.criterion import LossWeights


@dataclass
class ModelSection:
    """``preset``: architecture to build; ``init``: weights to start from (a gleekit model folder, a bundled name such
    as ``nano``, or an official checkpoint file, which then needs ``preset``); ``freeze``: module-name prefixes whose
    parameters do not train (e.g. ``backbone``, ``text_encoder``)."""

    preset: str | None = "nano"
    init: str | None = None
    freeze: list[str] = field(default_factory=list)


@dataclass
class DataSection:
    """``source``: ``shapeworld`` (fresh synthetic scenes) or ``coco`` (``coco_json`` + ``image_root``).
    ``task_weights``: sampling weights of detection / referring / visual samples (shapeworld).
    ``negative_referring``: share of shapeworld referring samples whose expression matches no object of the scene
    (no target: every query learns to score low), which teaches GLEE to say "no such object".
    ``video_frames``: share of shapeworld detection samples taken from a video frame (objects entering, leaving,
    mostly occluded) instead of a scene."""

    source: str = "shapeworld"
    seed: int = 0
    task_weights: dict[str, float] = field(default_factory=lambda: {"detection": 2.0, "referring": 1.0, "visual": 1.0})
    coco_json: str | None = None
    image_root: str | None = None
    val_coco_json: str | None = None
    full_category_prob: float = 0.5
    negative_referring: float = 0.0
    video_frames: float = 0.0


@dataclass
class OptimSection:
    lr: float = 3e-4
    weight_decay: float = 0.05
    backbone_lr_mult: float = 0.1
    text_lr_mult: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05


@dataclass
class LossSection:
    """``weights``: the official loss weights (class 4, box L1 5, GIoU 2, mask BCE 5, dice 5, confidence 4);
    ``num_points`` sampled per mask; ``denoising``: add the denoising queries and their losses;
    ``region_class_weight``: weight of the auxiliary region classification loss on backbone features
    (train/glee/region_loss.py; not in the official recipe, 0 = off); ``glee_weight``: weight of GLEE's own losses
    (1; 0 with a region weight trains the backbone alone on region classification, a pretraining stage that
    skips the rest of the model); ``region_colour_weight``: weight of the region head's mean-colour regression
    (0 = off); ``region_per_level``: one region head per backbone level instead of one over all levels;
    ``query_colour_weight``: weight of the matched decoder queries' mean-colour regression
    (train/glee/query_colour.py; 0 = off)."""

    weights: LossWeights = field(default_factory=LossWeights)
    num_points: int = 1024
    denoising: bool = True
    region_class_weight: float = 0.0
    glee_weight: float = 1.0
    region_colour_weight: float = 0.0
    region_per_level: bool = False
    query_colour_weight: float = 0.0


@dataclass
class TrainConfig(YamlConfig):
    """A whole run. ``batch_size`` is per process; ``num_workers`` background processes make the samples
    (0: the training process does); ``num_threads`` caps torch's CPU threads; ``mixed_precision``: accelerate's
    ``no`` / ``fp16`` / ``bf16``."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    steps: int = 1000
    batch_size: int = 8
    output_dir: str = "runs/glee"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    val_batches: int = 4
    checkpoint_every: int = 200
    mixed_precision: str = "no"
    num_threads: int | None = None
    num_workers: int = 0

