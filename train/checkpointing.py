"""Atomic training checkpoints: a folder is written under a temporary name and renamed into place, so an
interrupted save never leaves a half-written checkpoint behind and resume always finds a complete one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

LAST = "checkpoint-last"
STATE_NAME = "trainer_state.pt"


def save_atomically(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``directory`` (replacing an older one)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    recover_interrupted(directory)
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    write(tmp)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def recover_interrupted(directory: str | Path) -> None:
    """Put ``directory`` back from ``<directory>.old`` when a save was killed between its two renames (the new
    checkpoint never arrived; the previous one is complete)."""
    directory = Path(directory)
    old = directory.with_name(directory.name + ".old")
    if not directory.exists() and (old / STATE_NAME).is_file():
        old.rename(directory)


def load_trainer_state(directory: str | Path) -> dict:
    """The trainer state of a checkpoint folder (plain tensors and containers only: ``weights_only=True``)."""
    path = Path(directory) / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint: {STATE_NAME} is missing")
    return torch.load(path, map_location="cpu", weights_only=True)


def check_same_run(directory: str | Path, saved_config: str, config: dict[str, Any], free: tuple[str, ...]) -> None:
    """Refuse (ValueError) to resume ``directory`` under a config that differs from the one it was saved with
    (``saved_config``: its JSON) in anything but the top-level keys ``free`` (length, logging, workers...)."""
    saved, current = _flat(json.loads(saved_config)), _flat(json.loads(json.dumps(config)))
    changed = sorted(key for key in saved.keys() | current.keys()
                     if key.split(".")[0] not in free and saved.get(key) != current.get(key))
    if changed:
        shown = ", ".join(f"{key} {saved.get(key)!r} -> {current.get(key)!r}" for key in changed[:5])
        raise ValueError(f"{directory} was saved by a run with other settings ({shown}"
                         f"{', ...' if len(changed) > 5 else ''}): resume with its config, or start anew in "
                         "another output_dir")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}
