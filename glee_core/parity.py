"""Numerical parity with the official GLEE code, on fixture case directories.

    python -m glee_core.parity WEIGHTS CASES_DIR

``WEIGHTS`` holds the official parameter names (safetensors or a weights-only ``.pth``);
``CASES_DIR`` holds case directories in the format of ``shared/reference/glee/README.md`` §7
(``case.json``, input PNGs, ``tensors.safetensors``, ``postprocess.npz``). Every stored tensor that
gleekit produces is compared, then the post-processed outputs. Prints a table per case and ends
with ``max_abs_diff=<x> cases=<n> failed=<k>``; the exit status is 0 iff every value is within
tolerance: ``max |ours - official| <= 1e-4 * max(1, max |official|)`` per tensor (the reference README's
rule: scaled by the magnitude of large-valued tensors such as pixel boxes); integer tensors exactly;
binary masks identical except where the official logit is within 1e-4 of the threshold.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from glee_core import processing, tracking
from glee_core.checkpoint import from_official_names, load_weights, read_state_dict
from glee_core.config import GleeConfig, get_preset
from glee_core.modeling.glee import GleeModel, GleeOutput
from glee_core.video_inference import minvis_inference

TOLERANCE = 1e-4


@dataclass
class Comparison:
    name: str
    max_abs_diff: float
    ok: bool
    note: str = ""


@dataclass
class CaseReport:
    name: str
    rows: list[Comparison] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or not all(r.ok for r in self.rows)

    @property
    def max_abs_diff(self) -> float:
        return max((r.max_abs_diff for r in self.rows), default=0.0)

    def compare(self, name: str, ours, official, note: str = "") -> None:
        ours_t = torch.as_tensor(np.asarray(ours) if not isinstance(ours, torch.Tensor) else ours).detach().cpu()
        ref = torch.as_tensor(np.asarray(official) if not isinstance(official, torch.Tensor) else official)
        if tuple(ours_t.shape) != tuple(ref.shape):
            self.rows.append(Comparison(name, float("inf"), False, f"shape {list(ours_t.shape)} vs {list(ref.shape)}"))
            return
        if ref.numel() == 0:
            self.rows.append(Comparison(name, 0.0, True, note))
            return
        if ref.dtype in (torch.bool, torch.int64, torch.int32, torch.uint8) and ours_t.dtype == ref.dtype:
            diff = (ours_t.long() - ref.long()).abs().max().item()
            self.rows.append(Comparison(name, float(diff), diff == 0, note))
            return
        a, b = ours_t.double(), ref.double()
        err = (a - b).abs()
        ok = bool(err.max() <= TOLERANCE * max(1.0, b.abs().max().item()))
        self.rows.append(Comparison(name, err.max().item(), ok, note))


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _config_for(meta: dict) -> GleeConfig:
    """The architecture a case was produced with (``config`` key) and its input-size overrides."""
    name = meta.get("config", "")
    preset = "tiny" if name.startswith("tiny") else name
    config = get_preset(preset)
    overrides = meta.get("config_overrides", {})
    if overrides:
        config = config.with_input(
            min_size=overrides.get("INPUT.MIN_SIZE_TEST", config.input.min_size),
            max_size=overrides.get("INPUT.MAX_SIZE_TEST", config.input.max_size),
        )
    return config


class ModelCache:
    """One model per architecture, all loaded from the same official-name weights file."""

    def __init__(self, weights: Path, device: torch.device | str = "cpu"):
        self.weights = weights
        self.device = torch.device(device)
        self.models: dict[str, GleeModel] = {}
        self._state: dict[str, torch.Tensor] | None = None
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            with open(self.weights, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def get(self, config: GleeConfig) -> GleeModel:
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in self.models:
            if self._state is None:
                self._state, _ = from_official_names(read_state_dict(self.weights))
            model = GleeModel(config)
            model.load_report = load_weights(model, self._state, strict=True)
            self.models[key] = model.eval().to(self.device)
        return self.models[key]


def _prompt_inputs(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    prompts = meta["prompts"]
    if "categories" in prompts:
        return {"categories": prompts["categories"]}
    if "expression" in prompts:
        expressions = prompts["expression"]
        return {"expressions": [expressions] * meta["batch"] if isinstance(expressions, str) else expressions}
    vp = prompts["visual_prompt"]
    return {"categories": prompts.get("category_list", ["object"]), "visual_prompt_type": vp["type"]}


def _visual_prompt_mask(meta: dict, image_size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    from glee_core.modeling.visual_prompt import prompt_mask_from_box, prompt_mask_from_point

    vp = meta["prompts"]["visual_prompt"]
    if vp["type"] == "box":
        return prompt_mask_from_box(vp["box_xyxy"], image_size, padded)
    return prompt_mask_from_point(vp["point_xy"], image_size, padded)


def _compare_instances(report: CaseReport, suffix: str, result: processing.InstanceResult, post: dict,
                       official_mask_logits: torch.Tensor, mask_scored: bool) -> None:
    """Match ours to the official results by (query_index, label); the official top-k is unsorted."""
    ours_keys = {(int(q), int(l)): i for i, (q, l) in enumerate(zip(result.query_index, result.labels))}
    ref_q, ref_l = post[f"query_index{suffix}"], post[f"labels{suffix}"]
    missing = [(int(q), int(l)) for q, l in zip(ref_q, ref_l) if (int(q), int(l)) not in ours_keys]
    if missing:
        report.rows.append(Comparison(f"post.selection{suffix}", float("inf"), False, f"{len(missing)} (query, label) pairs differ"))
        return
    order = torch.tensor([ours_keys[(int(q), int(l))] for q, l in zip(ref_q, ref_l)], dtype=torch.long)
    official_logits = official_mask_logits[torch.as_tensor(ref_q, dtype=torch.long)]
    masks = result.masks[order]
    report.compare(f"post.boxes{suffix}", result.boxes[order], post[f"boxes{suffix}"])
    scores, note = result.scores[order].clone(), ""
    # A mask pixel whose official logit is within the tolerance of 0 may flip; it then shifts the mask
    # score. Such detections are scored on the official mask logits (their own logits are compared above).
    flipped = (masks.cpu() != torch.from_numpy(post[f"masks{suffix}"].astype(bool))).flatten(1).any(1)
    if mask_scored and bool(flipped.any()):
        scores[flipped] = result.prob[order][flipped] * processing.mask_scores(official_logits[flipped])
        note = f"{int(flipped.sum())} with near-threshold mask flips scored on the official mask logits"
    report.compare(f"post.scores{suffix}", scores, post[f"scores{suffix}"], note)
    if f"prob{suffix}" in post:
        report.compare(f"post.prob{suffix}", result.prob[order], post[f"prob{suffix}"])
    _compare_masks(report, f"post.masks{suffix}", masks, post[f"masks{suffix}"], official_logits)


def _compare_masks(report: CaseReport, name: str, ours: torch.Tensor, official: np.ndarray, official_logits: torch.Tensor | None):
    ref = torch.from_numpy(official.astype(bool))
    if tuple(ours.shape) != tuple(ref.shape):
        report.rows.append(Comparison(name, float("inf"), False, f"shape {list(ours.shape)} vs {list(ref.shape)}"))
        return
    differ = ours.cpu() != ref
    if official_logits is not None:
        differ &= official_logits.abs() > TOLERANCE
    count = int(differ.sum())
    near = int((ours.cpu() != ref).sum()) - count
    report.rows.append(Comparison(name, 0.0 if count == 0 else float("inf"), count == 0,
                                  f"{count} pixels differ away from the threshold, {near} near it"))


def _postprocess_image_case(report: CaseReport, meta, tensors, post, out, batch: processing.ImageBatch, lsj: bool):
    task = meta["task"]
    for i, (image_size, original) in enumerate(zip(batch.image_sizes, batch.original_sizes)):
        crop = processing.valid_region(image_size, original, lsj)
        mask_logits = processing.upsample_masks(out.pred_masks[i], batch.padded_size, crop, original)
        official_logits = processing.upsample_masks(tensors["out.pred_masks"][i], batch.padded_size, crop, original)
        if task == "visual":
            boxes = processing.scale_boxes(out.pred_boxes[i], batch.padded_size, image_size, original, lsj=True)
            result = processing.visual_prompt_inference(out.pred_logits[i], mask_logits, boxes)
        else:
            boxes = processing.scale_boxes(out.pred_boxes[i], batch.padded_size, crop, original, lsj=lsj)
            if f"post.in_boxes_xyxy.{i}" in tensors:
                report.compare(f"post.in_boxes_xyxy.{i}", boxes, tensors[f"post.in_boxes_xyxy.{i}"])
                report.compare(f"post.in_logits.{i}", out.pred_logits[i], tensors[f"post.in_logits.{i}"])
            topk = 1 if task == "referring" else 100
            result = processing.instance_inference(out.pred_logits[i], mask_logits, boxes, topk=topk)
        _compare_instances(report, f".{i}", result, post, official_logits, mask_scored=task != "visual")


def _postprocess_video_case(report: CaseReport, meta, tensors, post, out, batch: processing.ImageBatch):
    original, crop = batch.original_sizes[0], batch.image_sizes[0]
    video = minvis_inference(out.pred_logits, out.pred_boxes, out.pred_masks, out.query_embeds, batch.padded_size,
                             crop, original)
    for t in range(1, out.query_embeds.shape[0]):
        report.compare(f"track.match_indices.{t}", video.association.order[t], tensors[f"track.match_indices.{t}"])
        report.compare(f"track.match_target.{t}", video.association.match_targets[t], tensors[f"track.match_target.{t}"])
    report.compare("track.video_logits_mean", video.mean_logits, tensors["track.video_logits_mean"])
    # Official quirk (README §6.6): video boxes are scaled by the original size, ignoring padding.
    report.compare("track.video_boxes_xyxy_abs", video.all_boxes, tensors["track.video_boxes_xyxy_abs"])
    report.compare("post.query_index", video.query_index, torch.from_numpy(post["query_index"]))
    report.compare("post.labels", video.labels, torch.from_numpy(post["labels"]))
    report.compare("post.scores", video.scores, post["scores"])
    xywh = torch.cat([video.boxes[..., :2], video.boxes[..., 2:] - video.boxes[..., :2]], dim=-1).long()
    report.compare("post.boxes_xywh", xywh, torch.from_numpy(post["boxes_xywh"]))
    official_masks = tracking.reorder(tensors["out.pred_masks"], video.association.order)[video.query_index]
    official_logits = processing.upsample_masks(official_masks, batch.padded_size, crop, original)
    _compare_masks(report, "post.masks", video.masks, post["masks"], official_logits)


def run_case(cache: ModelCache, case_dir: Path) -> CaseReport:
    meta = json.loads((case_dir / "case.json").read_text())
    report = CaseReport(meta.get("name", case_dir.name))
    recorded = meta.get("weights", {})
    expected_sha = recorded.get("sha256") or recorded.get("sha256_of_generated_file")
    if expected_sha and expected_sha != cache.sha256:
        report.skipped = f"made with other weights (sha256 {expected_sha[:12]}…, given {cache.sha256[:12]}…)"
        return report
    tensors = load_file(str(case_dir / "tensors.safetensors"))
    with np.load(case_dir / "postprocess.npz") as npz:
        post = {k: npz[k] for k in npz.files}
    config = _config_for(meta)
    model = cache.get(config)
    spec = config.input

    # Preprocessing: resize the stored PNGs ourselves (ResizeShortestEdge at the case's test size).
    resize_spec = processing.InputSpec(min_size=spec.min_size, max_size=spec.max_size,
                                       size_divisibility=spec.size_divisibility)
    originals, uint8 = [], []
    for i, image in enumerate(meta["images"]):
        original = _read_png(case_dir / image["file"])
        originals.append(original)
        resized = processing.resize_image(original, resize_spec)
        ours_chw = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        report.compare(f"input.image_uint8.{i}", ours_chw, tensors[f"input.image_uint8.{i}"])
        uint8.append(tensors[f"input.image_uint8.{i}"])
    images = processing.normalize_and_pad(uint8, spec)
    report.compare("input.image", images, tensors["input.image"])
    batch = processing.ImageBatch(images, [tuple(t.shape[-2:]) for t in uint8], [tuple(o.shape[:2]) for o in originals])

    inputs = _prompt_inputs(meta, tensors)
    if meta["task"] == "visual":
        inputs["visual_prompt_masks"] = _visual_prompt_mask(meta, batch.image_sizes[0], batch.padded_size)
    record: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = model(images.to(cache.device), record=record, **inputs)
    # Post-processing is compared on the CPU in fp32, whatever device the model ran on.
    out = GleeOutput(*(t.float().cpu() for t in (out.pred_logits, out.pred_boxes, out.pred_masks, out.pred_scores,
                                                  out.query_embeds)), out.decoder)
    for name, value in record.items():
        if name in tensors:
            report.compare(name, value, tensors[name])
    skipped = sorted(set(tensors) - set(record) - {r.name for r in report.rows}
                     - {n for n in tensors if n.startswith(("track.", "post.", "input."))})
    if skipped:
        report.rows.append(Comparison("(not produced)", 0.0, True, ", ".join(skipped)))
    with torch.no_grad():
        if meta["task"] == "video":
            _postprocess_video_case(report, meta, tensors, post, out, batch)
        else:
            _postprocess_image_case(report, meta, tensors, post, out, batch, spec.lsj)
    return report


def _print_report(report: CaseReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.name}: {'FAILED' if report.failed else 'ok'}", show_lines=False)
    table.add_column("tensor")
    table.add_column("max |diff|", justify="right")
    table.add_column("ok")
    table.add_column("note")
    for row in report.rows:
        table.add_row(row.name, f"{row.max_abs_diff:.3g}", "yes" if row.ok else "NO", row.note[:80])
    if report.error:
        table.add_row("(error)", "", "NO", report.error[:200])
    Console(width=160).print(table)


def find_cases(cases_dir: Path) -> list[Path]:
    """Case directories (those with a case.json) under ``cases_dir``, or ``cases_dir`` itself."""
    cases_dir = Path(cases_dir)
    if (cases_dir / "case.json").is_file():
        return [cases_dir]
    return sorted(p.parent for p in cases_dir.glob("*/case.json"))


def run_parity(weights: Path, cases_dir: Path, quiet: bool = False, device: torch.device | str = "cpu") -> int:
    """Run every case; print tables and the summary line; return the exit status."""
    cases = find_cases(cases_dir)
    if not cases:
        print(f"no case directories (with case.json) found in {cases_dir}", file=sys.stderr)
        return 2
    cache = ModelCache(Path(weights), device)
    reports = []
    for case_dir in cases:
        try:
            report = run_case(cache, case_dir)
        except Exception as exc:  # a broken case is reported, the others still run
            report = CaseReport(case_dir.name, error=f"{type(exc).__name__}: {exc}")
        reports.append(report)
        if not quiet and not report.skipped:
            _print_report(report)
    skipped = [r for r in reports if r.skipped]
    for r in skipped:
        print(f"skipped {r.name}: {r.skipped}")
    compared = [r for r in reports if not r.skipped]
    failed = sum(r.failed for r in compared)
    worst = max((r.max_abs_diff for r in compared if not r.error), default=float("nan"))
    print(f"max_abs_diff={worst:.3g} cases={len(compared)} failed={failed}")
    if not compared:
        return 2
    return 0 if failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glee_core.parity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("cases_dir", type=Path)
    parser.add_argument("--quiet", action="store_true", help="only the summary line")
    parser.add_argument("--device", default="cpu", help="torch device to run the model on, e.g. cuda:0")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    return run_parity(args.weights, args.cases_dir, quiet=args.quiet, device=args.device)


if __name__ == "__main__":
    sys.exit(main())
