"""``gleekit demo``: the embedded nano model on a fresh shapeworld scene it never saw in training.

Runs category detection, a referring expression and a point prompt, prints each result next to the ground
truth, and writes overlay PNGs and JSON into the output folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

DEMO_SCENE = 3
"""Index of the held-out (test split) scene the demo shows."""


def demo(out: Path = typer.Option(Path("gleekit-demo"), help="Output folder for PNG overlays and JSON."),
         model: str = typer.Option("nano", help="Model folder or bundled name."),
         scene: int = typer.Option(DEMO_SCENE, min=0, help="Index of the held-out shapeworld scene to show."),
         threshold: float = typer.Option(0.2, help="Score threshold of the category detections."),
         nms_iou: float = typer.Option(0.5, help="Class-agnostic NMS of the category detections at this box IoU "
                                       "(one label per object).")) -> None:
    """Detect shapes, follow a referring expression and a point prompt on a held-out shapeworld scene."""
    from PIL import Image
    from rich.console import Console
    from rich.table import Table

    from glee_core.mask_ops import box_iou, interior_point, mask_iou
    from glee_core.predictor import GleePredictor
    from glee_core.structures import Categories, Expression, VisualPrompt
    from glee_core.visualize import save_overlay
    from train.data.shapeworld import CATEGORY_NAMES, attribute_phrase, generate_scene, referring_expressions, scene_seed

    console = Console()
    world = generate_scene(scene_seed("test", scene), split="test")
    rng = np.random.default_rng(scene)
    predictor = GleePredictor.from_pretrained(model)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(world.image).save(out / "scene.png")
    gt_masks = np.stack([o.mask for o in world.objects])
    gt_boxes = np.stack([o.box for o in world.objects])

    summary: dict = {"model": model, "scene": {"split": "test", "index": scene, "seed": world.seed,
                                               "objects": [attribute_phrase(o) for o in world.objects]}}

    dets = predictor.predict(world.image, Categories(list(CATEGORY_NAMES)), score_threshold=threshold, nms_iou=nms_iou)
    table = Table(title=f"1. categories ({len(CATEGORY_NAMES)} shape names): {len(dets)} detections "
                        f"(score >= {threshold}, NMS {nms_iou}), {len(world.objects)} objects in the scene")
    for column in ("#", "label", "score", "box x1,y1,x2,y2", "best ground truth (mask IoU)"):
        table.add_column(column)
    for i in range(len(dets)):
        ious = mask_iou(dets.masks[i:i + 1], gt_masks)[0]
        j = int(ious.argmax())
        table.add_row(str(i), dets.label_names[int(dets.labels[i])], f"{dets.scores[i]:.2f}",
                      ", ".join(f"{v:.0f}" for v in dets.boxes[i]), f"{attribute_phrase(world.objects[j])} ({ious[j]:.2f})")
    console.print(table)
    save_overlay(out / "categories.png", world.image, dets)
    summary["categories"] = dets.to_json_dict()

    expressions = referring_expressions(world, rng)
    ref = expressions[rng.integers(len(expressions))]
    best = predictor.predict(world.image, Expression(ref.text), topk=1)
    iou = float(box_iou(best.boxes[:1], gt_boxes[[ref.target]])[0, 0]) if len(best) else 0.0
    console.print(f'2. expression "{ref.text}" -> box {", ".join(f"{v:.0f}" for v in best.boxes[0])} '
                  f"score {best.scores[0]:.2f}; referent: {attribute_phrase(world.objects[ref.target])}, box IoU {iou:.2f}")
    save_overlay(out / "expression.png", world.image, best)
    summary["expression"] = {"text": ref.text, "target": int(ref.target), "box_iou": iou, **best.to_json_dict()}

    target = int(rng.integers(len(world.objects)))
    point = interior_point(world.objects[target].mask)
    best = predictor.predict(world.image, VisualPrompt(points=np.array([point], dtype=np.float32)), topk=1)
    ious = mask_iou(best.masks[:1], gt_masks)[0] if len(best) else np.zeros(len(world.objects))
    name = attribute_phrase(world.objects[int(ious.argmax())]) if len(best) else "-"
    iou = float(ious[target])
    console.print(f"3. point ({point[0]:.0f}, {point[1]:.0f}) on the {attribute_phrase(world.objects[target])} -> "
                  f"mask of the {name}, mask IoU with the pointed object {iou:.2f}, score {best.scores[0]:.2f}")
    save_overlay(out / "point.png", world.image, best)
    summary["point"] = {"point": list(point), "target": target, "mask_iou": iou, **best.to_json_dict()}

    (out / "results.json").write_text(json.dumps(summary, indent=1))
    console.print(f"wrote {out}/scene.png, categories.png, expression.png, point.png and results.json")
