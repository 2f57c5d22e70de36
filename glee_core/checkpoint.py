"""Reading official GLEE checkpoints and our Hugging Face-style folders, safely and loudly.

Official checkpoints are detectron2 ``.pth`` files (``{"model": state_dict, ...}``) whose names start
with ``glee.``; our module tree is the official one without that prefix. Files are read with
``torch.load(weights_only=True)`` or safetensors: no pickled code is ever executed.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

OFFICIAL_PREFIX = "glee."
# Official entries that are not part of the inference model: the training criterion's buffers.
TRAINING_ONLY_PREFIXES = ("criterion.",)
# Buffers every model computes from its config (manifest kind ``constant``): taken from the model
# as constructed when a checkpoint lacks them.
CONSTANT_KEY_PATTERN = re.compile(r"(relative_position_index|rope_win\.freqs_(cos|sin)|rope_glb\.freqs_(cos|sin)|attn\.rope\.freqs_(cos|sin))$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def is_constant_key(name: str) -> bool:
    """True for buffers the model computes itself (Swin relative indices, EVA02 rope tables)."""
    return bool(CONSTANT_KEY_PATTERN.search(name))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file, on CPU.

    detectron2 checkpoints wrap the weights in ``{"model": ...}``; that wrapper is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be read as a weights-only torch checkpoint ({type(exc).__name__}: {exc}). "
            "gleekit never unpickles code; re-save the file as a plain state dict or safetensors."
        ) from exc
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (name -> tensor)")
    return obj


def from_official_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official names -> ours: ``glee.X`` -> ``X``; returns (renamed, dropped training-only names).

    Names without the ``glee.`` prefix are kept unchanged (they surface as unexpected keys when
    loading, by name). A ``module.`` prefix (DistributedDataParallel) is removed first.
    """
    renamed, dropped = {}, []
    for name, tensor in state.items():
        if name.startswith("module."):
            name = name[len("module."):]
        if name.startswith(TRAINING_ONLY_PREFIXES):
            dropped.append(name)
        elif name.startswith(OFFICIAL_PREFIX):
            renamed[name[len(OFFICIAL_PREFIX):]] = tensor
        else:
            renamed[name] = tensor
    return renamed, dropped


def to_official_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> official names (the inverse of :func:`from_official_names` for model weights)."""
    return {OFFICIAL_PREFIX + name: tensor for name, tensor in state.items()}


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a model (names in our convention)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    constants_from_model: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        parts = []
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                shown = ", ".join(names[:limit]) + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
                parts.append(f"{len(names)} {label}: {shown}")
        if self.mismatched:
            shown = ", ".join(f"{n} checkpoint {list(a)} vs model {list(b)}" for n, a, b in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} with a different shape: {shown}")
        return "; ".join(parts) if parts else "all weights loaded"


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Copy ``state`` (our names) into ``model``, casting to each parameter's dtype.

    Raises :class:`CheckpointError` naming every missing, unexpected or mis-shaped key when
    ``strict`` (weights left uninitialised are never silent). With ``strict=False`` whatever fits is
    loaded and the report says what did not.
    """
    report = LoadReport()
    expected = model.state_dict()
    usable = {}
    for name, tensor in state.items():
        if name not in expected:
            report.unexpected.append(name)
        elif tuple(tensor.shape) != tuple(expected[name].shape):
            report.mismatched.append((name, tuple(tensor.shape), tuple(expected[name].shape)))
        else:
            usable[name] = tensor
    for name in expected:
        if name in state:
            continue
        if is_constant_key(name):
            report.constants_from_model.append(name)
        else:
            report.missing.append(name)
    if strict and not report.ok:
        raise CheckpointError(
            "checkpoint does not match the model — " + report.summary()
            + ". Check the preset (lite-r50 / plus-swinl / pro-eva02l) or pass strict=False to load what fits."
        )
    with torch.no_grad():
        for name, tensor in usable.items():
            target = expected[name]
            target.copy_(tensor.to(dtype=target.dtype) if target.is_floating_point() else tensor)
    return report


def state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with tied tensors un-aliased (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        ptr = tensor.untyped_storage().data_ptr()
        out[name] = tensor.detach().clone().contiguous() if ptr in seen else tensor.detach().contiguous()
        seen.add(ptr)
    return out


def weights_sha256(paths: list[Path]) -> str:
    """sha256 over the bytes of ``paths`` in sorted order (folders: every file in them): the fingerprint that
    evaluation reports and calibrations (:class:`glee_core.rejection.RejectionCalibrator`) are tied to."""
    digest = hashlib.sha256()
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    for file in files:
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
