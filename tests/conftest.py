"""Shared fixtures: the official-code reference material in ``../shared/reference/glee``.

The reference lives beside the repository (CI clones the repo with ``shared/`` next to it).
Set ``GLEEKIT_SHARED`` to point elsewhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("GLEEKIT_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE_DIR = SHARED_DIR / "reference" / "glee"
CASES_DIR = REFERENCE_DIR / "cases"
REAL_CASES_DIR = REFERENCE_DIR / "cases_real"
SEEDED_CACHE = Path(os.environ.get("GLEEKIT_CACHE", REPO_ROOT / ".cache")) / "seeded"

torch.set_num_threads(1)  # xdist runs one worker per core


def require_reference() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"official-code reference not found at {REFERENCE_DIR} (set GLEEKIT_SHARED)")
    return REFERENCE_DIR


class Case:
    """One fixture directory: ``case.json``, ``tensors.safetensors``, ``postprocess.npz``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "case.json").read_text())
        self.tensors: dict[str, torch.Tensor] = load_file(str(self.path / "tensors.safetensors"))
        with np.load(self.path / "postprocess.npz") as npz:
            self.post = {k: npz[k] for k in npz.files}

    @property
    def name(self) -> str:
        return self.meta["name"]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]


def load_case(name: str) -> Case:
    require_reference()
    for root in (CASES_DIR, REAL_CASES_DIR):
        if (root / name).is_dir():
            return Case(root / name)
    raise FileNotFoundError(name)


def strip_official_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names ``glee.X`` -> ``X`` (our module tree); training-only ``criterion.*`` dropped."""
    return {k[len("glee."):]: v.float() if v.is_floating_point() else v for k, v in state.items() if k.startswith("glee.")}


@pytest.fixture(scope="session")
def tiny_state() -> dict[str, torch.Tensor]:
    """The tiny oracle's weights, fp32, with the ``glee.`` prefix stripped."""
    require_reference()
    return strip_official_prefix(load_file(str(REFERENCE_DIR / "weights.safetensors")))


def seeded_weights_path(preset: str) -> Path:
    """Regenerate (once, cached under .cache/seeded) the name-seeded weights of a real preset (README §9.2)."""
    require_reference()
    key = preset.replace("-", "_")
    out = SEEDED_CACHE / f"{key}.safetensors"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        subprocess.run(
            [sys.executable, str(SHARED_DIR / "tools" / "seeded_weights.py"),
             str(REFERENCE_DIR / f"{key}_state_dict.tsv"), str(tmp),
             "--tied", str(REFERENCE_DIR / f"tied_parameters_{key}.json")],
            check=True, capture_output=True,
        )
        os.replace(tmp, out)
    return out


def seeded_state(preset: str) -> dict[str, torch.Tensor]:
    return strip_official_prefix(load_file(str(seeded_weights_path(preset))))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-4, name: str = "") -> None:
    """atol scaled by the reference magnitude for large-valued tensors (README §7.3)."""
    actual = actual.detach().float().cpu()
    expected = expected.float()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    diff = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert diff <= atol * scale, f"{name}: max abs diff {diff:.3g} > {atol * scale:.3g}"
