"""The synthetic LISA mixture: shapeworld written in the four official formats, read back by the real sources
(for tests and the CPU demo). All four live under one folder (layouts in ``train.data.shapeworld.export``)."""
from __future__ import annotations

from pathlib import Path

from train.data.shapeworld.export import write_shapeworld
from train.mllm.mixture import LISA_RATES, Mixture
from train.mllm.sources import ReasonSegSource, ReferSegSource, SemSegSource, VqaSource, ade20k_classes, read_class_names

_TASKS = {"sem_seg": "semseg", "refer_seg": "referring", "vqa": "conversation", "reason_seg": "reasoning"}


def shapeworld_mixture_paths(out_dir: str | Path, split: str) -> dict[str, Path]:
    """Where each source's files of ``split`` live under ``out_dir``."""
    out = Path(out_dir)
    return {
        "sem_seg": out / "semseg",
        "refer_seg": out / "shapeworld",
        "vqa": out / f"llava_{split}.json",
        "reason_seg": out / "ReasonSeg" / split,
        "reason_seg_explanatory": out / "ReasonSeg" / "explanatory" / f"{split}.json",
    }


def write_shapeworld_mixture(out_dir: str | Path, split: str, n: int, seed: int = 0) -> dict[str, Path]:
    """Write ``n`` scenes of ``split`` for each source's format; returns ``shapeworld_mixture_paths``."""
    for task in _TASKS.values():
        write_shapeworld(out_dir, task, split, n, seed, progress=False)
    return shapeworld_mixture_paths(out_dir, split)


def shapeworld_mixture(out_dir: str | Path, split: str, seed: int = 0,
                       rates: dict[str, float] = LISA_RATES) -> Mixture:
    """The four sources on the files ``write_shapeworld_mixture`` wrote, mixed at ``rates``."""
    out, paths = Path(out_dir), shapeworld_mixture_paths(out_dir, split)
    sources = {
        "sem_seg": SemSegSource(paths["sem_seg"] / "images" / split, paths["sem_seg"] / "annotations" / split,
                                ade20k_classes(read_class_names(paths["sem_seg"] / "classes.txt")), seed=seed),
        "refer_seg": ReferSegSource(out, "shapeworld", "unc", split, seed=seed),
        "vqa": VqaSource(paths["vqa"], out / split),
        "reason_seg": ReasonSegSource(paths["reason_seg"], paths["reason_seg_explanatory"], seed=seed),
    }
    return Mixture(sources, rates, seed, name=f"shapeworld-{split}")
