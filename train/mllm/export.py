"""Export a trained GLEE-LLM: LoRA merged into the VLM, saved as a folder ``mllm.io.load_gleellm`` reads, and
refused unless the reloaded folder reproduces the trained model's outputs on a fixed batch."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from adapters.lora import merge_lora
from mllm.batching import GleeLLMBatch
from mllm.io import load_gleellm, save_gleellm
from mllm.modeling import GleeLLM
from train.checkpointing import save_atomically


class ExportMismatchError(RuntimeError):
    """The exported folder, reloaded, does not give the trained model's outputs."""


@torch.no_grad()
def reference_outputs(model: GleeLLM, batch: GleeLLMBatch) -> dict[str, torch.Tensor]:
    """Token logits [B, T, V] and ``[SEG]`` mask logits [N, Hp/4, Wp/4] of ``model`` in eval mode (fp32, CPU)."""
    was_training = model.training
    model.eval()
    try:
        out = model(batch)
    finally:
        model.train(was_training)
    return {"logits": out.logits.float().cpu(), "seg_masks": out.seg_masks.float().cpu()}


def export_gleellm(model: GleeLLM, out_dir: str | Path, batch: GleeLLMBatch, atol: float = 1e-3) -> Path:
    """Merge ``model``'s VLM LoRA (in place), save it to ``out_dir`` atomically and check the reload.

    ``batch`` is a fixed batch with labels dropped or kept (only outputs are compared). Raises
    :class:`ExportMismatchError` (and writes nothing) when any output of the reloaded model differs from the
    trained model's by more than ``atol``.
    """
    expected = reference_outputs(model, batch)
    from peft import PeftModel

    if isinstance(model.vlm, PeftModel):
        model.vlm = merge_lora(model.vlm)

    def write(tmp: Path) -> None:
        save_gleellm(model, tmp)
        reloaded = load_gleellm(tmp, device=model.device)
        found = reference_outputs(reloaded, batch)
        for key, value in expected.items():
            if value.shape != found[key].shape:
                raise ExportMismatchError(f"export refused: reloaded {key} have shape {tuple(found[key].shape)}, "
                                          f"the trained model's {tuple(value.shape)}")
            error = float((value - found[key]).abs().max()) if value.numel() else 0.0
            if error > atol:
                raise ExportMismatchError(f"export refused: reloaded {key} differ from the trained model's by "
                                          f"{error:.3g} > atol {atol:g}; the saved folder does not reproduce it")

    out_dir = Path(out_dir)
    try:
        return save_atomically(out_dir, write)
    except ExportMismatchError:
        shutil.rmtree(out_dir.with_name(out_dir.name + ".tmp"), ignore_errors=True)
        raise
