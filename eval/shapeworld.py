"""Held-out quality of a GLEE model on shapeworld scenes: category detection AP (pycocotools), referring
Acc@0.5, and how often a visual prompt (box or point) selects the prompted object.

Definitions:

* box / mask AP50 and AP: COCOeval (``iouType`` bbox / segm) of category prompts with every shape name, on
  the predictor's top-k detections without a score threshold.
* referring Acc@0.5: the share of expressions whose single best box has IoU >= 0.5 with the referent's box.
* visual-prompt accuracy: the share of prompts whose best mask has IoU >= 0.5 with the prompted object's mask
  (the prompt is the object's box, or one pixel of its mask: its pole of inaccessibility, the pixel farthest
  from the boundary, so the point is unambiguous).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm.auto import tqdm

from glee_core.mask_ops import box_iou, encode_rles, interior_point, mask_iou
from glee_core.predictor import GleePredictor
from glee_core.structures import Categories, Expression, VisualPrompt
from train.data.shapeworld import CATEGORY_NAMES, generate_scene, referring_expressions, scene_seed


@dataclass
class ShapeworldScores:
    """Held-out figures; ``num_*`` count the evaluated scenes, expressions and prompts."""

    box_ap: float
    box_ap50: float
    mask_ap: float
    mask_ap50: float
    refer_acc50: float
    visual_box_acc: float
    visual_point_acc: float
    num_scenes: int
    num_expressions: int
    num_prompts: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def table(self) -> str:
        rows = [("box AP50", self.box_ap50), ("box AP", self.box_ap), ("mask AP50", self.mask_ap50),
                ("mask AP", self.mask_ap), ("referring Acc@0.5", self.refer_acc50),
                ("visual prompt (box) acc", self.visual_box_acc), ("visual prompt (point) acc", self.visual_point_acc)]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value:6.3f}" for name, value in rows]
        lines.append(f"({self.num_scenes} scenes, {self.num_expressions} expressions, {self.num_prompts} visual prompts)")
        return "\n".join(lines)


def _coco_eval(gt: dict, results: list[dict], iou_type: str) -> tuple[float, float]:
    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def evaluate_shapeworld(predictor: GleePredictor, *, num_scenes: int = 200, split: str = "test", seed: int = 0,
                        progress: bool = True) -> ShapeworldScores:
    """Score ``predictor`` on ``num_scenes`` fresh scenes of ``split`` under ``seed`` (see the module docstring)."""
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    categories = Categories(list(CATEGORY_NAMES))
    gt: dict = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n}
                                                                  for i, n in enumerate(CATEGORY_NAMES)]}
    results: list[dict] = []
    refer_hits: list[bool] = []
    visual_hits: dict[str, list[bool]] = {"box": [], "point": []}
    for index in tqdm(range(num_scenes), desc=f"shapeworld {split}", disable=not progress):
        scene = generate_scene(scene_seed(split, index, seed), split=split)
        rng = np.random.default_rng([scene.seed, 7])
        image_id = index + 1
        h, w = scene.image.shape[:2]
        gt["images"].append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id:012d}.png"})
        for obj, rle in zip(scene.objects, encode_rles(np.stack([o.mask for o in scene.objects]))):
            x1, y1, x2, y2 = (float(v) for v in obj.box)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "iscrowd": 0,
                                      "category_id": obj.category_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                      "area": float(obj.area), "segmentation": rle})
        results.extend(predictor.predict(scene.image, categories).to_coco(image_id))

        expressions = referring_expressions(scene, rng)
        if expressions:
            ref = expressions[rng.integers(len(expressions))]
            best = predictor.predict(scene.image, Expression(ref.text), topk=1)
            target_box = scene.objects[ref.target].box[None]
            refer_hits.append(len(best) > 0 and float(box_iou(best.boxes[:1], target_box)[0, 0]) >= 0.5)

        target = scene.objects[rng.integers(len(scene.objects))]
        prompts = {"box": VisualPrompt(boxes=target.box[None]),
                   "point": VisualPrompt(points=np.array([interior_point(target.mask)], dtype=np.float32))}
        for kind, prompt in prompts.items():
            best = predictor.predict(scene.image, prompt, topk=1)
            visual_hits[kind].append(len(best) > 0 and float(mask_iou(best.masks[:1], target.mask[None])[0, 0]) >= 0.5)

    box_ap, box_ap50 = _coco_eval(gt, results, "bbox")
    mask_ap, mask_ap50 = _coco_eval(gt, results, "segm")
    mean = lambda hits: float(np.mean(hits)) if hits else 0.0  # noqa: E731
    return ShapeworldScores(box_ap=box_ap, box_ap50=box_ap50, mask_ap=mask_ap, mask_ap50=mask_ap50,
                            refer_acc50=mean(refer_hits), visual_box_acc=mean(visual_hits["box"]),
                            visual_point_acc=mean(visual_hits["point"]), num_scenes=num_scenes,
                            num_expressions=len(refer_hits), num_prompts=sum(len(v) for v in visual_hits.values()))
