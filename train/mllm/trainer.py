"""The GLEE-LLM trainer: one loop for a CPU process, ``accelerate launch`` on many, plain or DeepSpeed ZeRO-2/3.

Step ``s`` of process ``r`` (of ``n``), micro-batch ``m`` (of ``grad_accum``) trains on samples
``s·G + (r·grad_accum + m)·B + j`` (``B`` = ``batch_size``, ``G`` = B·grad_accum·n, j < B) and seeds torch with
(seed, s, r·grad_accum + m): a step's data and randomness depend only on the step, so a resumed run continues
exactly and n processes match one process with n× the accumulation. Every ``save_every`` steps
``checkpoint-<step>/`` is written atomically (model, optimizer, RNG via ``accelerator.save_state``, plus
``trainer_state.pt``: step, history, scheduler, read with ``weights_only=True``), the last ``keep_last`` are kept,
and a rerun resumes from the newest. Under DeepSpeed its engine reads its own checkpoint files with pickle: resume
only from checkpoints you wrote. Progress:
tqdm (loss terms, samples/s, tokens/s), ``metrics.jsonl`` (one row per logged step), ``loss_curve.png``, and
every ``validation.every`` steps ``validation.jsonl`` (ReasonSeg gIoU / cIoU of generated answers, via ``eval``).
At the end the model is exported (LoRA merged, reload verified) to ``output_dir/model``.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mllm.batching import GleeLLMBatch, collate
from mllm.modeling import GleeLLM
from train.checkpointing import STATE_NAME, check_same_run, load_trainer_state, save_atomically
from train.curves import save_loss_curve
from train.mllm.config import MllmTrainConfig
from train.mllm.data_config import vocabulary_texts
from train.mllm.samples import MllmSample, ProposalConsumer, SampleSource
from train.schedules import lr_multiplier

TERMS = ("ce", "mask_bce", "mask_dice", "select", "pointer")
CHECKPOINT_PREFIX = "checkpoint-"
OOM_HINT = ("out of memory: lower batch_size (raise grad_accum to keep the step size), turn on "
            "model.gradient_checkpointing, use deepspeed zero3 (shards parameters) instead of zero2, or load the "
            "VLM in 4 bits (model.bits: 4, QLoRA)")


@dataclass
class MllmTrainResult:
    """What a run produced: its folder, the exported model folder (None without export) and the history rows."""

    output_dir: Path
    model_dir: Path | None
    steps: int
    history: list[dict]


def prepare_single_process_env() -> None:
    """Make DeepSpeed usable without a launcher (one process) and on CPU: the torch.distributed variables of a
    world of 1 on a free port when unset, DeepSpeed's CPU accelerator, and no JIT build of its shm op."""
    if "RANK" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def use_bf16(config: MllmTrainConfig) -> bool:
    return config.precision == "bf16" or (config.precision == "auto" and torch.cuda.is_available())


def deepspeed_config(config: MllmTrainConfig) -> dict | None:
    """The DeepSpeed JSON of ``config.deepspeed`` with its ``auto`` values (micro-batch, accumulation,
    clipping, bf16) filled from the config; no optimizer / scheduler section (the trainer brings torch's AdamW,
    which needs no JIT build)."""
    path = config.deepspeed_file()
    if path is None:
        return None
    ds = json.loads(path.read_text())
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ValueError(f"{path}: remove the {key!r} section; set optim.* in the training config instead")
    ds.update(train_micro_batch_size_per_gpu=config.batch_size, gradient_accumulation_steps=config.grad_accum,
              gradient_clipping=config.optim.grad_clip)
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": use_bf16(config)}
    ds.pop("train_batch_size", None)
    return ds


RESUME_FREE = ("steps", "output_dir", "log_every", "save_every", "keep_last", "export", "export_atol", "validation",
               "num_threads", "report_to")
"""Settings a resumed run may change (how long, where, how often it saves and reports); the rest must match."""


def lr_factor(config: MllmTrainConfig) -> Callable[[int], float]:
    """Multiplier of ``optim.lr`` after ``step`` optimizer steps (:func:`train.schedules.lr_multiplier`)."""
    optim = config.optim
    return lr_multiplier(optim.schedule, optim.warmup_steps, config.steps, optim.min_lr_ratio)


def sample_indices(step: int, rank: int, world: int, micro: int, batch_size: int, grad_accum: int) -> list[int]:
    """The sample indices of micro-batch ``micro`` of process ``rank`` at optimizer step ``step``."""
    first = step * batch_size * grad_accum * world + (rank * grad_accum + micro) * batch_size
    return list(range(first, first + batch_size))


def make_batch(model: GleeLLM, samples: list[MllmSample]) -> GleeLLMBatch:
    """Tokenize and collate samples into one training batch (labels and one mask target per ``[SEG]``; the
    samples' precomputed object tokens when every one carries them)."""
    conversations = [model.encode(s.image, s.turns) for s in samples]
    objects = [s.objects for s in samples]
    return collate(conversations, [s.image for s in samples], model.glee.config.input,
                   model.processor.tokenizer.pad_token_id, seg_masks=[s.masks for s in samples],
                   objects=objects if all(o is not None for o in objects) else None,
                   meta=[{"source": s.source, **s.meta} for s in samples])


def build_model(config: MllmTrainConfig, source: SampleSource, tokenizer=None) -> GleeLLM:
    """The model a config trains, identical in every process (seeded): a saved GleeLLM (``model.init``) or the
    VLM + GLEE it names, then 4/8-bit preparation, LoRA on the language model and gradient checkpointing.
    ``tokenizer``: the tiny VLM's tokenizer to reuse (default: a word tokenizer trained on the source's texts)."""
    from adapters.lora import apply_lora, llm_lora_config, token_rows
    from adapters.quantization import prepare_for_kbit_lora
    from glee_core.modeling.glee import GleeModel
    from mllm.config import GleeLLMConfig
    from mllm.io import load_gleellm

    section = config.model
    torch.manual_seed(config.seed)
    if section.init:
        model = load_gleellm(section.init)
        model.config.train_mask_prompts = section.train_mask_prompts
    else:
        vlm, processor = _base_vlm(config, source, tokenizer)
        extra = {} if section.system_prompt is None else {"system_prompt": section.system_prompt}
        if section.object_categories is not None:
            extra["object_categories"] = list(section.object_categories)
        try:
            settings = GleeLLMConfig(**{**section.settings, **extra, "num_objects": section.num_objects,
                                        "glee_policy": section.glee_policy,
                                        "train_mask_prompts": section.train_mask_prompts,
                                        "max_length": section.max_length,
                                        "base_vlm": None if section.vlm == "tiny" else section.vlm,
                                        "base_glee": section.glee})
        except TypeError as error:
            raise ValueError(f"model.settings: {error}") from None
        model = GleeLLM.build(vlm, processor, GleeModel.from_pretrained(section.glee, preset=section.glee_preset), settings)
        if section.vlm == "tiny" and section.tiny.init_word_embeddings:
            from mllm.tiny import init_word_embeddings

            init_word_embeddings(model)
    if section.bits:
        model.vlm = prepare_for_kbit_lora(model.vlm)
    lora = section.lora
    if lora.enabled and not hasattr(model.vlm, "peft_config"):
        ids = model.token_ids
        rows = token_rows(model.vlm, [ids.seg, ids.object_slot, *ids.object_refs]) if lora.new_token_rows else None
        model.vlm = apply_lora(model.vlm, llm_lora_config(lora.r, lora.alpha, lora.dropout, lora.targets,
                                                          lora.modules_to_save, trainable_token_indices=rows))
    if section.gradient_checkpointing:
        model.vlm.gradient_checkpointing_enable()
        model.vlm.enable_input_require_grads()
    return model


def _base_vlm(config: MllmTrainConfig, source: SampleSource, tokenizer=None):
    section = config.model
    if section.vlm == "tiny":
        from mllm.tiny import tiny_llava, word_tokenizer

        tiny = section.tiny
        if tokenizer is None:
            tokenizer = word_tokenizer(["USER: ASSISTANT:"] + vocabulary_texts(source, tiny.vocab_samples))
        return tiny_llava(tokenizer, image_size=tiny.image_size, hidden=tiny.hidden, layers=tiny.layers,
                          heads=tiny.heads)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from adapters.quantization import load_quantized

    dtype = torch.bfloat16 if use_bf16(config) else torch.float32
    kwargs = {"device_map": {"": torch.cuda.current_device()}} if section.bits and torch.cuda.is_available() else {}
    vlm = load_quantized(AutoModelForImageTextToText, section.vlm, section.bits, compute_dtype=dtype, dtype=dtype,
                         **kwargs)
    return vlm, AutoProcessor.from_pretrained(section.vlm)


def detach_frozen_glee(model: GleeLLM) -> torch.nn.Module:
    """Take the frozen GLEE out of ``model``'s module tree (still ``model.glee``) so ZeRO-3 does not partition it:
    GLEE's modules return dataclasses, which ZeRO-3's backward re-gather hooks cannot see into. Its weights are
    then neither in the engine's checkpoints nor in its state dict (they come from ``model.glee`` / the config)."""
    glee = model._modules.pop("glee")
    if any(p.requires_grad for p in glee.parameters()):
        model._modules["glee"] = glee
        raise ValueError("deepspeed zero3 trains with a frozen GLEE only (model.glee_policy: frozen); use zero2 to "
                         "train GLEE's LoRA or all of it")
    object.__setattr__(model, "glee", glee)
    return glee


@contextlib.contextmanager
def whole_parameters():
    """Build models with whole parameters even while ZeRO-3 is active (transformers would otherwise create them
    partitioned, as empty tensors, through ``deepspeed.zero.Init``)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def attach_proposer(source: SampleSource, model: GleeLLM) -> None:
    """Give a :class:`ProposalConsumer` source the model's object proposer (a frozen GLEE proposes the same every
    step, so samples carry them precomputed); refuse one whose conversations need proposals the model lacks."""
    if not isinstance(source, ProposalConsumer):
        return
    if model.object_projector is not None and model.frozen_glee:
        source.use_proposer(model.object_tokens)
    elif source.needs_proposer:
        raise ValueError("caption conversations cite GLEE's proposals: they need object tokens "
                         "(model.num_objects > 0) and a frozen GLEE (model.glee_policy: frozen)")


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run (``checkpoint-<step>`` with a trainer state), oldest first."""
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
             if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


class MllmTrainer:
    """Train a :class:`GleeLLM` on a :class:`SampleSource` per a :class:`MllmTrainConfig` (module docstring)."""

    def __init__(self, config: MllmTrainConfig, source: SampleSource, model: GleeLLM | None = None):
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

        self.config, self.source = config, source
        self.output_dir = Path(config.output_dir)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        ds = deepspeed_config(config)
        zero3 = ds is not None and ds.get("zero_optimization", {}).get("stage") == 3
        if zero3 and config.model.lora.new_token_rows and not torch.cuda.is_available():
            raise ValueError("model.lora.new_token_rows under ZeRO-3 needs CUDA (peft gathers the token rows on a "
                             "GPU): on CPU use deepspeed zero2, or train embed_tokens / lm_head in modules_to_save")
        kwargs = {}
        if ds is not None:
            prepare_single_process_env()
            kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds)
        if not torch.cuda.is_available():  # CPU: gloo when distributed, accelerate's CPU mode unless DeepSpeed runs
            if ds is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
                kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
            kwargs["cpu"] = ds is None
        mixed = "no" if ds is not None or not use_bf16(config) else "bf16"
        if config.report_to:
            kwargs.update(log_with=list(config.report_to), project_dir=str(self.output_dir))
        self.accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision=mixed, **kwargs)
        if config.report_to:
            self.accelerator.init_trackers("gleekit-mllm", config={"steps": config.steps, "lr": config.optim.lr,
                                                                   "batch_size": config.batch_size,
                                                                   "grad_accum": config.grad_accum})
        model = model if model is not None else build_model(config, source)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no parameter trains: enable model.lora or a glee_policy other than frozen")
        optimizer = torch.optim.AdamW(params, lr=config.optim.lr, betas=config.optim.betas,
                                      weight_decay=config.optim.weight_decay)
        glee = detach_frozen_glee(model) if zero3 else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if glee is not None:
            glee.to(self.accelerator.device)
        attach_proposer(source, self.unwrapped)
        self.step = 0
        self.history: list[dict] = []
        self.validation = self._validation_benchmark()

    def _validation_benchmark(self):
        """eval's ReasonSeg runner on the validation split (None when validation is off), built on every process
        (the shapeworld split is written by the main process)."""
        from eval.benchmarks.reasonseg import ReasonSegBenchmark

        section, acc = self.config.validation, self.accelerator
        if not section.every:
            return None
        if section.split_dir is not None:
            return ReasonSegBenchmark(Path(section.split_dir).parent, Path(section.split_dir).name)
        folder = self.output_dir / "validation-data"
        if acc.is_main_process and not (folder / "ReasonSeg" / "val").is_dir():
            from train.data.shapeworld.export import write_shapeworld

            write_shapeworld(folder, "reasoning", "val", self.config.validation.samples, self.config.data.seed,
                             progress=False)
        acc.wait_for_everyone()
        return ReasonSegBenchmark(folder, "val")

    def validate(self) -> dict | None:
        """gIoU / cIoU of generated answers on the first ``validation.samples`` queries (main process), appended to
        ``validation.jsonl``; None on the other processes."""
        from eval.models import EvalModel
        from eval.runner import run_benchmark

        acc, row = self.accelerator, None
        if acc.is_main_process:
            _, result = run_benchmark(self.validation, EvalModel.wrap(self.unwrapped),
                                      limit=self.config.validation.samples, progress=False)
            row = {"step": self.step, **result.metrics, "queries": result.counts["overall"]}
            if self.config.report_to:
                acc.log({f"validation/{k}": v for k, v in result.metrics.items()}, step=self.step)
            with open(self.output_dir / "validation.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")
        acc.wait_for_everyone()
        return row

    @property
    def unwrapped(self) -> GleeLLM:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` atomically (every process writes its shards) and prune to ``keep_last``."""
        acc = self.accelerator
        target = self.output_dir / f"{CHECKPOINT_PREFIX}{self.step:08d}"

        def write(tmp: Path) -> None:
            acc.wait_for_everyone()  # tmp exists for every process
            acc.save_state(str(tmp))
            acc.wait_for_everyone()
            torch.save({"step": self.step, "history": json.dumps(self.history), "scheduler": self.scheduler.state_dict(),
                        "config": json.dumps(self.config.to_dict())}, tmp / STATE_NAME)

        if acc.is_main_process:
            save_atomically(target, write)
            for old in checkpoints(self.output_dir)[:-self.config.keep_last]:
                shutil.rmtree(old)
        else:
            acc.wait_for_everyone()
            acc.save_state(str(target.with_name(target.name + ".tmp")))
            acc.wait_for_everyone()
        acc.wait_for_everyone()
        return target

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint of ``output_dir``; True when one was found."""
        found = checkpoints(self.output_dir)
        if not found:
            return False
        state = load_trainer_state(found[-1])
        check_same_run(found[-1], state["config"], self.config.to_dict(), RESUME_FREE)
        self.accelerator.load_state(str(found[-1]))
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = json.loads(state["history"])
        if self.accelerator.is_main_process:  # metrics.jsonl as of the checkpoint
            self._rewrite_metrics()
        return True

    # ------------------------------------------------------------------ reports
    def _rewrite_metrics(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in self.history))

    def _log(self, row: dict) -> None:
        self.history.append(row)
        if self.config.report_to:
            self.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")

    def _write_curve(self) -> None:
        if self.accelerator.is_main_process and self.history:
            save_loss_curve(self.output_dir / "loss_curve.png", [(r["step"], r["loss"]) for r in self.history],
                            title="GLEE-LLM training loss (CE + mask + select + pointer)")

    # ------------------------------------------------------------------ loop
    def _micro_step(self, samples: list[MllmSample]) -> tuple[dict[str, float], int]:
        """Forward + backward of one micro-batch: its loss terms and token count."""
        batch = make_batch(self.unwrapped, samples)
        with self.accelerator.accumulate(self.model):
            out = self.model(batch)
            self.accelerator.backward(out.loss)
            if self.accelerator.sync_gradients and self.config.optim.grad_clip > 0 and \
                    self.accelerator.state.deepspeed_plugin is None:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        terms = {"loss": float(out.loss.detach())}
        terms.update({k: float(getattr(out, f"{k}_loss").detach()) for k in TERMS})
        return terms, int(batch.attention_mask.sum())

    @contextlib.contextmanager
    def _curriculum(self):
        """While active, the model's settings follow this step of the schedule: no ``[SEG]`` through GLEE before
        ``model.glee_from_step``, pointer loss weight 0 before ``model.pointer_from_step``; the saved settings
        stay those of the full schedule."""
        section, settings = self.config.model, self.unwrapped.config
        saved = settings.train_mask_prompts, settings.loss.pointer
        if self.step < section.glee_from_step:
            settings.train_mask_prompts = 0
        if self.step < section.pointer_from_step:
            settings.loss.pointer = 0.0  # still computed: every parameter keeps a (zero) gradient under DDP
        try:
            yield
        finally:
            settings.train_mask_prompts, settings.loss.pointer = saved

    def train_step(self) -> dict:
        """One optimizer step (``grad_accum`` micro-batches); the logged row (means over every process)."""
        config, acc = self.config, self.accelerator
        rank, world = acc.process_index, acc.num_processes
        started = time.perf_counter()
        rows, tokens = [], 0
        for micro in range(config.grad_accum):
            torch.manual_seed(hash((config.seed, self.step, rank * config.grad_accum + micro)) % 2**63)
            indices = sample_indices(self.step, rank, world, micro, config.batch_size, config.grad_accum)
            try:
                with self._curriculum():
                    terms, count = self._micro_step([self.source.sample(i) for i in indices])
            except torch.OutOfMemoryError as error:
                raise RuntimeError(f"{OOM_HINT} (batch_size {config.batch_size}, grad_accum {config.grad_accum}, "
                                   f"deepspeed {config.deepspeed}, bits {config.model.bits})") from error
            rows.append(terms)
            tokens += count
        self.scheduler.step()
        lr = self.scheduler.get_last_lr()[0]
        self.step += 1
        local = torch.tensor([np.mean([r[k] for r in rows]) for k in ("loss", *TERMS)] + [tokens],
                             dtype=torch.float64, device=acc.device)
        total = acc.reduce(local, reduction="sum")
        means = (total[:-1] / world).tolist()
        if not math.isfinite(means[0]):
            raise FloatingPointError(f"loss became {means[0]} at step {self.step}; lower optim.lr or check the data")
        seconds = time.perf_counter() - started
        samples = config.batch_size * config.grad_accum * world
        return {"step": self.step, **dict(zip(("loss", *TERMS), means)), "lr": lr, "seconds": seconds,
                "samples_per_s": samples / seconds, "tokens_per_s": float(total[-1]) / seconds}

    def train(self, *, resume: bool = True, stop_after: int | None = None) -> MllmTrainResult:
        """Run (or continue) the ``config.steps`` schedule; ``stop_after`` ends this run at that step (a rerun
        resumes). Exports the model at the end of the schedule when ``config.export``."""
        config, acc = self.config, self.accelerator
        last = config.steps if stop_after is None else min(stop_after, config.steps)
        if not resume and checkpoints(self.output_dir):  # they would outrank this run's own at the next resume
            raise ValueError(f"{self.output_dir} holds checkpoints of an earlier run ({checkpoints(self.output_dir)[-1].name}"
                             "): resume it, or start this one in another output_dir")
        if not (resume and self.resume()) and acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "metrics.jsonl").write_text("")
        self.model.train()
        bar = tqdm(total=config.steps, initial=self.step, desc="train mllm", dynamic_ncols=True,
                   disable=not acc.is_local_main_process)
        while self.step < last:
            row = self.train_step()
            bar.update(1)
            if self.step % config.log_every == 0 or self.step == config.steps:
                self._log(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", ce=f"{row['ce']:.3f}", dice=f"{row['mask_dice']:.3f}",
                                sps=f"{row['samples_per_s']:.1f}", tps=f"{row['tokens_per_s']:.0f}")
            if self.validation is not None and self.step % config.validation.every == 0:
                self.validate()
                self.model.train()
            if self.step % config.save_every == 0 or self.step == last:
                self.save_checkpoint()
                self._write_curve()
        bar.close()
        if config.report_to:
            acc.end_training()
        model_dir = self.export() if config.export and self.step == config.steps else None
        return MllmTrainResult(self.output_dir, model_dir, self.step, self.history)

    def export(self) -> Path:
        """``output_dir/model``: the trained weights (gathered from every process) in a fresh model, LoRA merged,
        saved and verified by :func:`train.mllm.export.export_gleellm`."""
        from train.mllm.export import export_gleellm

        acc = self.accelerator
        state = acc.get_state_dict(self.model)
        model_dir = self.output_dir / "model"
        if acc.is_main_process:
            with whole_parameters():  # the fresh model and the verifying reload: whole tensors under ZeRO-3 too
                fresh = build_model(self.config, self.source, copy.deepcopy(self.unwrapped.processor.tokenizer))
                missing, unexpected = fresh.load_state_dict(
                    {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
                if unexpected or any(not k.startswith("glee.") for k in missing):  # a detached GLEE: from config
                    raise RuntimeError(f"export: the trained state does not fit the model (missing "
                                       f"{[k for k in missing if not k.startswith('glee.')][:5]}, "
                                       f"unexpected {unexpected[:5]})")
                batch = make_batch(fresh, [self.source.sample(i) for i in range(self.config.batch_size)])
                export_gleellm(fresh, model_dir, batch, self.config.export_atol)
        acc.wait_for_everyone()
        return model_dir
