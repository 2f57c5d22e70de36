"""Held-out quality of a GLEE model on shapeworld scenes: category detection AP (pycocotools), referring
Acc@0.5 / cIoU / gIoU, and how often a visual prompt (box or point) selects the prompted object. Scenes are
generated from their index and the seed, so nothing is read from disk.

Definitions:

* box / mask AP50 and AP: COCOeval (``iouType`` bbox / segm) of category prompts with every shape name, on
  the predictor's top-k detections without a score threshold.
* referring: one expression per scene; Acc@0.5 = share whose single best box has IoU >= 0.5 with the
  referent's box; cIoU / gIoU of its mask (:func:`eval.benchmarks.refer.referring_result`); Acc@0.5 also per
  expression kind (attribute, spatial, ordinal, superlative, between: which reasoning fails).
* visual-prompt accuracy: the share of prompts whose best mask has IoU >= 0.5 with the prompted object's mask
  (the prompt is the object's box, or one pixel of its mask: its pole of inaccessibility, the pixel farthest
  from the boundary, so the point is unambiguous).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.benchmarks.refer import ReferRecord, refer_record, referring_result
from eval.coco_metrics import coco_scores
from eval.models import EvalModel
from eval.runner import Benchmark, EvalResult, run_benchmark
from glee_core.mask_ops import encode_rles, interior_point, mask_iou
from glee_core.structures import Categories, VisualPrompt
from train.data.shapeworld import CATEGORY_NAMES, generate_scene, referring_expressions, scene_seed
from train.data.shapeworld.referring import KINDS as EXPRESSION_KINDS

VISUAL_KINDS = ("box", "point")


@dataclass
class SceneRecord:
    """One scene: its COCO image entry, true annotations and predicted results, the referring outcome and the
    expression's kind (None when the scene has no unique expression) and whether each visual prompt hit its
    object."""

    image: dict
    annotations: list[dict]
    results: list[dict]
    refer: ReferRecord | None
    visual: dict[str, bool]
    refer_kind: str | None = None


class ShapeworldBenchmark(Benchmark):
    """``num_scenes`` fresh scenes of ``split`` under ``seed``."""

    def __init__(self, num_scenes: int = 150, *, split: str = "test", seed: int = 2026):
        if num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
        self.num_scenes, self.split, self.seed = num_scenes, split, seed
        self.categories = Categories(list(CATEGORY_NAMES))
        self.name = f"shapeworld {split}"

    def __len__(self) -> int:
        return self.num_scenes

    def run_sample(self, model: EvalModel, index: int) -> SceneRecord:
        scene = generate_scene(scene_seed(self.split, index, self.seed), split=self.split)
        rng = np.random.default_rng([scene.seed, 7])
        image_id = index + 1
        height, width = scene.image.shape[:2]
        image = {"id": image_id, "width": width, "height": height, "file_name": f"{image_id:012d}.png"}
        annotations = []
        for k, (obj, rle) in enumerate(zip(scene.objects, encode_rles(np.stack([o.mask for o in scene.objects])))):
            x1, y1, x2, y2 = (float(v) for v in obj.box)
            annotations.append({"id": image_id * 1000 + k + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": obj.category_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": float(obj.area), "segmentation": rle})
        predictor = model.predictor
        results = predictor.predict(scene.image, self.categories).to_coco(image_id)

        refer, refer_kind = None, None
        expressions = referring_expressions(scene, rng)
        if expressions:
            ref = expressions[rng.integers(len(expressions))]
            target = scene.objects[ref.target]
            refer = refer_record(model, scene.image, ref.text, target.box, target.mask, index)
            refer_kind = ref.kind

        target = scene.objects[rng.integers(len(scene.objects))]
        prompts = {"box": VisualPrompt(boxes=target.box[None]),
                   "point": VisualPrompt(points=np.array([interior_point(target.mask)], dtype=np.float32))}
        visual = {}
        for kind, prompt in prompts.items():
            best = predictor.predict(scene.image, prompt, topk=1)
            visual[kind] = len(best) > 0 and float(mask_iou(best.masks[:1], target.mask[None])[0, 0]) >= 0.5
        return SceneRecord(image, annotations, results, refer, visual, refer_kind)

    def score(self, records: list[SceneRecord]) -> EvalResult:
        gt = {"images": [r.image for r in records], "annotations": [a for r in records for a in r.annotations],
              "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CATEGORY_NAMES)]}
        results = [p for r in records for p in r.results]
        box, mask = (coco_scores(gt, results, iou_type) for iou_type in ("bbox", "segm"))
        refers = [r.refer for r in records if r.refer is not None]
        referring = referring_result(refers).metrics
        metrics = {"box AP50": box.stats["AP50"], "box AP": box.stats["AP"], "mask AP50": mask.stats["AP50"],
                   "mask AP": mask.stats["AP"], "referring Acc@0.5": referring["REC Acc@0.5"],
                   "referring cIoU": referring["RES cIoU"], "referring gIoU": referring["RES gIoU"]}
        for kind in EXPRESSION_KINDS:
            of_kind = [r.refer for r in records if r.refer is not None and r.refer_kind == kind]
            if of_kind:
                metrics[f"referring Acc@0.5 ({kind})"] = referring_result(of_kind).metrics["REC Acc@0.5"]
        for kind in VISUAL_KINDS:
            metrics[f"visual prompt ({kind}) acc"] = float(np.mean([r.visual[kind] for r in records]))
        return EvalResult(metrics=metrics, rows=list(metrics.items()),
                          counts={"scenes": len(records), "expressions": len(refers),
                                  "visual prompts": len(VISUAL_KINDS) * len(records)},
                          per_category=mask.per_category, pr_curve=mask.pr_curve)

    def settings(self) -> dict[str, Any]:
        return {"num_scenes": self.num_scenes, "split": self.split, "seed": self.seed,
                "prompt": list(CATEGORY_NAMES), "visual_prompts": list(VISUAL_KINDS)}


def evaluate_shapeworld(predictor: Any, *, num_scenes: int = 150, split: str = "test", seed: int = 2026,
                        progress: bool = True) -> EvalResult:
    """Score an in-memory ``predictor`` (or GLEE-LLM) on ``num_scenes`` fresh scenes (see the module docstring)."""
    return run_benchmark(ShapeworldBenchmark(num_scenes, split=split, seed=seed), EvalModel.wrap(predictor),
                         progress=progress)[1]
