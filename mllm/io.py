"""Save and load a whole :class:`mllm.GleeLLM` as one folder.

Layout::

    gleellm.json             config (incl. base model ids and the VLM fingerprint) + which parts are stored
    vlm/                     the VLM and its processor (Hugging Face folder), unless only the base id is kept
    vlm_adapter/             peft adapter of the VLM when it is LoRA-wrapped and not merged
    glee/                    the GLEE model (gleekit folder; LoRA merged in), unless it is a frozen bundled preset
    projectors.safetensors   the GleeLLM's own weights: seg_projector.*, object_projector.*, pointer.*
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from adapters.lora import has_lora, merged_state_dict
from adapters.quantization import from_pretrained_quantized
from glee_core.checkpoint import CheckpointError, LoadReport
from glee_core.modeling.glee import GleeModel, bundled_model_dir
from mllm.config import GleeLLMConfig
from mllm.modeling import GleeLLM
from mllm.tokens import add_special_tokens

CONFIG_FILE = "gleellm.json"
BUNDLED = Path(__file__).resolve().parent / "weights"
PROJECTORS_FILE = "projectors.safetensors"
FORMAT_VERSION = 2  # 2: the per-part object projector (format 1 folders hold the one-LayerNorm projector)


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def save_gleellm(model: GleeLLM, directory: str | Path, *, save_base_vlm: bool = True) -> Path:
    """Write ``model`` into ``directory``. ``save_base_vlm=False`` keeps only the base VLM's id (``config.base_vlm``)
    and, for a LoRA-wrapped VLM, its adapter: the folder is then small, and loading needs the base."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parts: dict[str, Any] = {"vlm": None, "vlm_adapter": None, "glee": None}
    vlm, base_state = model.vlm, None
    if _is_peft(vlm):
        vlm.save_pretrained(directory / "vlm_adapter")
        parts["vlm_adapter"] = "vlm_adapter"
        vlm = vlm.get_base_model()
        base_state = _without_adapters(vlm.state_dict())
    if save_base_vlm:
        vlm.save_pretrained(directory / "vlm", state_dict=base_state)
        model.processor.save_pretrained(directory / "vlm")
        parts["vlm"] = "vlm"
    elif not model.config.base_vlm:
        raise ValueError("save_base_vlm=False needs config.base_vlm (the id or path the VLM loads from)")
    shipped_preset = model.config.base_glee and bundled_model_dir(model.config.base_glee) is not None
    if not (model.frozen_glee and shipped_preset):
        glee = model.glee
        if has_lora(glee):  # saved merged: a plain GLEE folder that loads anywhere
            glee = GleeModel(glee.config)
            glee.load_state_dict(merged_state_dict(model.glee))
        glee.save_pretrained(directory / "glee")
        parts["glee"] = "glee"
    save_file({k: v.contiguous() for k, v in head_state(model).items()}, str(directory / PROJECTORS_FILE),
              metadata={"format": "pt", "library": "gleekit"})
    record = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(), "parts": parts}
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2))
    return directory


def load_gleellm(directory: str | Path, *, vlm: str | Path | None = None, glee: str | Path | None = None,
                 quantization_config: Any = None, device: str | torch.device | None = None,
                 strict: bool = True) -> GleeLLM:
    """Load a folder written by :func:`save_gleellm`.

    ``vlm`` / ``glee`` override where the base models come from (an id or a local folder); a base VLM whose
    type, hidden size or depth differs from the one the folder was trained on is refused.
    ``quantization_config`` (e.g. :func:`adapters.quantization.quantization_config`) loads the VLM in 4/8 bits.
    ``directory`` may also name a bundled model (``shapeworld-tiny``).
    With ``strict`` (default) a VLM or GLEE weight missing from its checkpoint (or an unused or mis-shaped
    entry) raises :class:`CheckpointError`; otherwise ``model.load_report`` records it.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    directory = resolve_model_dir(directory)
    record_file = directory / CONFIG_FILE
    if not record_file.is_file():
        raise CheckpointError(f"{directory} is not a GleeLLM folder: {CONFIG_FILE} is missing")
    record = json.loads(record_file.read_text())
    if record.get("format_version") != FORMAT_VERSION:
        hint = ("; format 1 was written before the object projector encoded each region part on its own "
                "(2026-12): retrain, reusing its parts with `model.vlm: <folder>/vlm` and `model.glee: <folder>/glee`"
                if record.get("format_version") == 1 else "")
        raise CheckpointError(f"{record_file} has format_version {record.get('format_version')!r}; "
                              f"this gleekit reads {FORMAT_VERSION}{hint}")
    config = GleeLLMConfig.from_dict(record["config"])
    parts = record["parts"]
    source = vlm or (directory / parts["vlm"] if parts.get("vlm") else config.base_vlm)
    if source is None:
        raise CheckpointError(f"{directory} stores no VLM and names no base_vlm; pass vlm=")
    base, loading = from_pretrained_quantized(AutoModelForImageTextToText, source, quantization_config,
                                              output_loading_info=True)
    _check_fingerprint(base, config, source)
    report = LoadReport(missing=[f"vlm.{k}" for k in loading.get("missing_keys", [])],
                        unexpected=[f"vlm.{k}" for k in loading.get("unexpected_keys", [])],
                        mismatched=[(f"vlm.{k}", tuple(a), tuple(b)) for k, a, b in loading.get("mismatched_keys", [])])
    processor = AutoProcessor.from_pretrained(directory / parts["vlm"] if parts.get("vlm") else source)
    token_ids = add_special_tokens(processor.tokenizer, config.num_objects)
    if base.get_input_embeddings().num_embeddings < len(processor.tokenizer):
        raise CheckpointError(f"the VLM from {source} has {base.get_input_embeddings().num_embeddings} token "
                              f"embeddings, fewer than the {len(processor.tokenizer)} tokens of its processor")
    if parts.get("vlm_adapter"):
        from peft import PeftModel

        base = PeftModel.from_pretrained(base, directory / parts["vlm_adapter"])
    glee_source = glee or (directory / parts["glee"] if parts.get("glee") else config.base_glee)
    if glee_source is None:
        raise CheckpointError(f"{directory} stores no GLEE model and names no base_glee; pass glee=")
    glee_model = GleeModel.from_pretrained(glee_source, strict=False)
    for part in ("missing", "unexpected", "mismatched"):
        getattr(report, part).extend((f"glee.{e}" if isinstance(e, str) else (f"glee.{e[0]}", *e[1:]))
                                     for e in getattr(glee_model.load_report, part))
    if strict and not report.ok:
        raise CheckpointError(f"{directory}: the weights did not all load — {report.summary()}")
    model = GleeLLM(base, processor, glee_model, config, token_ids)
    model.load_report = report
    state = load_file(str(directory / PROJECTORS_FILE))
    owned = set(head_state(model))
    if set(state) != owned:
        raise CheckpointError(f"{PROJECTORS_FILE}: missing {sorted(owned - set(state))}, "
                              f"unexpected {sorted(set(state) - owned)}")
    model.load_state_dict(state, strict=False)
    if device is not None:
        for name, child in model.named_children():
            if name != "vlm" or quantization_config is None:
                child.to(device)
    return model.eval()


def head_state(model: GleeLLM) -> dict[str, torch.Tensor]:
    """The GleeLLM's own weights (projectors, pointer head): everything outside ``vlm`` and ``glee``."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(("vlm.", "glee."))}


def _without_adapters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base weights of a peft-injected model: adapter tensors, trained copies (``modules_to_save``) and trained
    token rows dropped, the original names (``base_layer.``, ``original_module.``, ``token_adapter.``) restored."""
    renames = (".token_adapter.base_layer.", ".base_layer.", ".original_module.")
    dropped = (".lora_", ".modules_to_save.", ".trainable_tokens_")
    state = {k: v for k, v in state.items() if not any(part in k for part in dropped)}
    for part in renames:
        state = {k.replace(part, "."): v for k, v in state.items()}
    return state


def resolve_model_dir(name: str | Path) -> Path:
    """A folder path as given, or the bundled model of that name (``mllm.DEFAULT_MODEL``)."""
    path = Path(name)
    if not path.exists() and (BUNDLED / str(name) / CONFIG_FILE).is_file():
        return BUNDLED / str(name)
    return path


def _check_fingerprint(vlm: nn.Module, config: GleeLLMConfig, source: Any) -> None:
    text = vlm.config.get_text_config()
    found = {"model_type": vlm.config.model_type, "hidden_size": text.hidden_size,
             "num_hidden_layers": text.num_hidden_layers}
    expected = config.vlm_fingerprint
    wrong = {k: (expected[k], found[k]) for k in expected if expected[k] != found.get(k)}
    if wrong:
        details = ", ".join(f"{k} {a!r} expected, {b!r} found" for k, (a, b) in wrong.items())
        raise CheckpointError(f"the base VLM {source} does not match the one this GleeLLM was trained on "
                              f"({config.base_vlm or 'saved copy'}): {details}")
