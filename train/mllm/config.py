"""Typed configuration of a GLEE-LLM training run (``gleekit train mllm --config CONFIG.yaml``).

Sections are dataclasses; unknown keys fail at start, naming the key. Defaults are LISA's recipe (AdamW lr 3e-4,
weight decay 0, betas (0.9, 0.95), WarmupDecayLR with 100 warm-up steps, gradient accumulation 10, clipping 1.0,
LoRA r 8 / alpha 16 on q_proj, v_proj with embed_tokens and lm_head trained in full, ZeRO-2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.config_io import YamlConfig
from train.schedules import SCHEDULES

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TRACKERS = ("tensorboard", "wandb")  # accelerate's trackers; the package (tensorboard / wandb) is the user's to install


@dataclass
class LoraSection:
    """LoRA on the VLM's language model (``targets``: a peft regex, None = q_proj / v_proj of the language model);
    ``modules_to_save`` train in full (they learn the new ``[SEG]`` / object tokens, as in LISA).
    ``new_token_rows``: train only the rows of gleekit's added tokens in ``embed_tokens`` / ``lm_head`` (peft
    trainable tokens; the pretrained vocabulary stays frozen; a 7B LLaVA's 4-bit step drops from 12.7 to 9.5 GiB,
    computed by ``benchmarks/mllm_memory.py --train-rows new``); then leave those two out of ``modules_to_save``."""

    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: str | None = None
    modules_to_save: list[str] = field(default_factory=lambda: ["lm_head", "embed_tokens"])
    new_token_rows: bool = False


@dataclass
class TinyVlmSection:
    """The random-weight tiny LLaVA built when ``model.vlm`` is ``tiny``; its word tokenizer is trained on the
    texts of the first ``vocab_samples`` training samples. ``init_word_embeddings``: start each word's embedding
    from GLEE's text tower (:func:`mllm.tiny.init_word_embeddings`)."""

    image_size: int = 64
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    vocab_samples: int = 200
    init_word_embeddings: bool = False


@dataclass
class ModelSection:
    """``vlm``: ``tiny`` or a Hugging Face id / folder (e.g. a LLaVA 7B); ``glee``: a bundled GLEE name, a folder,
    or an official checkpoint file with ``glee_preset`` (lite-r50, plus-swinl, pro-eva02l);
    ``init``: a saved GleeLLM folder to continue from (then ``vlm`` / ``glee`` are not used). ``bits``: load the
    VLM in 4 or 8 bits (QLoRA; needs ``lora.enabled``). ``glee_policy``: frozen / lora / full.
    ``object_categories``: the category prompt GLEE proposes the ``num_objects`` object tokens with (None: the
    model default, "object").
    ``train_mask_prompts``: at most this many ``[SEG]`` per micro-batch go through GLEE (None: all);
    ``glee_from_step``: before this optimizer step none does (token CE and the cheap pointer loss only: the LLM
    first learns which object a question means). ``pointer_from_step``: before this optimizer step the pointer
    loss has weight 0 (on shapeworld it keeps the LLM from learning to read an ``<objK>`` mention unless that
    has formed first). ``settings``: further :class:`mllm.GleeLLMConfig` fields of a new model (e.g.
    ``silhouette_size``, ``objects_after_question``, ``pointer_keys``, ``mask_source``, ``loss``)."""

    vlm: str = "tiny"
    glee: str = "nano"
    glee_preset: str | None = None
    init: str | None = None
    num_objects: int = 10
    object_categories: list[str] | None = None
    glee_policy: str = "frozen"
    train_mask_prompts: int | None = None
    glee_from_step: int = 0
    pointer_from_step: int = 0
    max_length: int = 512
    system_prompt: str | None = None
    bits: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    gradient_checkpointing: bool = False
    tiny: TinyVlmSection = field(default_factory=TinyVlmSection)
    lora: LoraSection = field(default_factory=LoraSection)


@dataclass
class MixtureSection:
    """``sources``: {name: {type: sem_seg | refer_seg | vqa | reason_seg, ...constructor arguments (paths)}};
    ``rates``: {name: relative rate} (LISA: sem_seg 9, refer_seg 3, vqa 3, reason_seg 1)."""

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)


@dataclass
class DataSection:
    """``source``: ``shapeworld`` (synthetic conversations made in-process from ``scenes`` train scenes of
    ``kinds`` — reasoning, referring, pair, caption — drawn at ``kind_rates``, uniformly when empty) or
    ``mixture`` (files on disk, see :class:`MixtureSection`)."""

    source: str = "shapeworld"
    seed: int = 0
    scenes: int = 200
    kinds: list[str] = field(default_factory=lambda: ["reasoning", "referring", "pair"])
    kind_rates: dict[str, float] = field(default_factory=dict)
    mixture: MixtureSection = field(default_factory=MixtureSection)


@dataclass
class ValidationSection:
    """Every ``every`` steps (0: never) the model answers ``samples`` ReasonSeg queries of ``split_dir`` (a split
    folder in the official format) by generation, scored by ``eval``'s ReasonSeg runner (gIoU / cIoU, short /
    long). Without ``split_dir`` a shapeworld run validates on shapeworld's ``val`` split, written in that format
    into ``output_dir/validation-data``."""

    every: int = 0
    samples: int = 16
    split_dir: str | None = None


@dataclass
class OptimSection:
    """AdamW; ``schedule`` after a linear warm-up over ``warmup_steps``: ``warmup_decay`` (DeepSpeed's
    WarmupDecayLR: linear to 0 at the last step), ``cosine`` (to ``min_lr_ratio`` × lr at the last step) or
    ``constant``."""

    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    warmup_steps: int = 100
    schedule: str = "warmup_decay"
    min_lr_ratio: float = 0.0


@dataclass
class MllmTrainConfig(YamlConfig):
    """A whole run. One optimizer step sees ``batch_size`` × ``grad_accum`` × processes samples.

    ``deepspeed``: a DeepSpeed JSON (a path, or ``zero2`` / ``zero3`` for the shipped ones; None: plain
    accelerate). ``precision``: ``auto`` (bf16 on GPU, fp32 on CPU), ``bf16`` or ``fp32``.
    ``save_every``: steps between checkpoints (``output_dir/checkpoint-<step>``), the last ``keep_last`` kept.
    ``report_to``: also log to these trackers through accelerate (``tensorboard``, ``wandb``; off by default).
    """

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    steps: int = 5000
    batch_size: int = 2
    grad_accum: int = 10
    deepspeed: str | None = "zero2"
    precision: str = "auto"
    output_dir: str = "runs/mllm"
    seed: int = 0
    log_every: int = 1
    save_every: int = 100
    keep_last: int = 2
    export: bool = True
    export_atol: float = 1e-3
    num_threads: int | None = None
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "log_every": self.log_every, "save_every": self.save_every, "keep_last": self.keep_last}
        if bad := {k: v for k, v in positive.items() if v < 1}:
            raise ValueError(f"these settings must be >= 1: {bad}")
        if unknown := [t for t in self.report_to if t not in TRACKERS]:
            raise ValueError(f"report_to: unknown trackers {unknown}; use any of {list(TRACKERS)} (off by default)")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.optim.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {list(SCHEDULES)}, got {self.optim.schedule!r}")
        if not 0 <= self.optim.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.optim.min_lr_ratio}")
        for name in ("glee_from_step", "pointer_from_step"):
            if getattr(self.model, name) < 0:
                raise ValueError(f"model.{name} must be >= 0, got {getattr(self.model, name)}")
        if self.data.source not in ("shapeworld", "mixture"):
            raise ValueError(f"data.source must be shapeworld or mixture, got {self.data.source!r}")
        if self.model.bits not in (None, 4, 8):
            raise ValueError(f"model.bits must be 4, 8 or null, got {self.model.bits!r}")
        if self.validation.every < 0 or self.validation.samples < 1:
            raise ValueError("validation.every must be >= 0 and validation.samples >= 1")
        if self.validation.every and self.validation.split_dir is None and self.data.source != "shapeworld":
            raise ValueError("validation.every is set but validation.split_dir is not: name a ReasonSeg split folder "
                             "(e.g. dataset/reason_seg/ReasonSeg/val)")
        if self.model.bits and not self.model.lora.enabled:
            raise ValueError("model.bits (QLoRA) trains LoRA adapters only: set model.lora.enabled true")
        lora = self.model.lora
        both = {"lm_head", "embed_tokens"} & set(lora.modules_to_save)
        if lora.new_token_rows and both:
            raise ValueError(f"model.lora.new_token_rows trains only the new tokens' rows of {sorted(both)}, which "
                             "model.lora.modules_to_save trains in full: remove them from modules_to_save")

    def deepspeed_file(self) -> Path | None:
        """The DeepSpeed JSON named by ``deepspeed`` (shipped names resolve to ``train/recipes/deepspeed/``)."""
        if self.deepspeed is None:
            return None
        path = Path(self.deepspeed)
        if not path.suffix:
            path = RECIPES / "deepspeed" / f"{self.deepspeed}.json"
        if not path.is_file():
            raise FileNotFoundError(f"deepspeed config not found: {path} (use zero2, zero3 or a JSON path)")
        return path

