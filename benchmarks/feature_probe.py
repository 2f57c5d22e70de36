"""Where does a GLEE model keep what an object is? Linear probes on held-out shapeworld objects.

    python benchmarks/feature_probe.py [--model nano] [--num-scenes 120] [--seed 11]

For every object of ``--num-scenes`` val-split scenes that a decoder query finds (box IoU >= 0.5 with the
object's box), it collects the object's features at several depths of the model — the backbone levels and the
per-pixel mask features mean-pooled over the object's mask, the matched query's embedding and its class logits
for the 8 shape names — and fits a multinomial logistic regression per depth on the first 60 % of the scenes,
then prints the held-out accuracy for shape (8 kinds) and colour. The model's own argmax over its class logits
is the last row. A depth where shape reads poorly caps every category-prompted metric downstream of it.
"""
from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F

from glee_core import processing
from glee_core.mask_ops import box_iou
from glee_core.modeling.glee import GleeModel
from train.data.shapeworld.scene import SHAPES, generate_scenes
from train.glee.matcher import Target
from train.glee.region_loss import mask_pooled, region_weights

MIN_PIXELS = 30
TRAIN_SHARE = 0.6


@torch.no_grad()
def collect(model: GleeModel, num_scenes: int, seed: int) -> tuple[dict[str, list], list[str], list[str], list[int]]:
    """Features per depth, shape and colour of every found object, and its scene index."""
    features: dict[str, list] = {}
    shapes, colours, scenes = [], [], []
    for index, scene in enumerate(generate_scenes("val", num_scenes, seed=seed)):
        batch = processing.preprocess([scene.image], model.config.input)
        record: dict = {}
        out = model(batch.tensor, categories=list(SHAPES), record=record)
        height, width = batch.tensor.shape[-2:]
        cx, cy, w, h = out.pred_boxes[0].unbind(-1)
        boxes = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                             (cy + h / 2) * height], -1).numpy()
        found = []  # (object, its best query) for objects a query covers at box IoU >= 0.5
        for obj in scene.objects:
            ious = box_iou(obj.box[None], boxes)[0]
            if obj.area >= MIN_PIXELS and ious.max() >= 0.5:
                found.append((obj, int(ious.argmax())))
        if not found:
            continue
        masks = torch.zeros(len(found), height, width, dtype=torch.bool)
        for i, (obj, _) in enumerate(found):
            masks[i, :obj.mask.shape[0], :obj.mask.shape[1]] = torch.from_numpy(obj.mask)
        target = Target(torch.zeros(len(found), dtype=torch.long), torch.zeros(len(found), 4), masks)
        maps = {level: record[f"backbone.{level}"][0] for level in model.backbone.out_features}
        maps["mask features"] = out.mask_features[0]
        rows = {name: mask_pooled(fmap, region_weights(target, tuple(fmap.shape[-2:]))) for name, fmap in maps.items()}
        queries = [query for _, query in found]
        rows["query"] = out.query_embeds[0, queries]
        rows["class logits"] = out.pred_logits[0, queries]
        for name, values in rows.items():
            features.setdefault(name, []).extend(values.float())
        shapes.extend(obj.shape for obj, _ in found)
        colours.extend(obj.color for obj, _ in found)
        scenes.extend([index] * len(found))
    return features, shapes, colours, scenes


def probe_accuracy(x: torch.Tensor, labels: torch.Tensor, train: torch.Tensor) -> float:
    """Held-out accuracy of an L2-regularised multinomial logistic regression fit on the ``train`` rows."""
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    linear = torch.nn.Linear(x.shape[1], int(labels.max()) + 1)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x[train]), labels[train]) + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((linear(x[~train]).argmax(1) == labels[~train]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nano", help="a bundled name or a model folder")
    parser.add_argument("--num-scenes", type=int, default=120)
    parser.add_argument("--seed", type=int, default=11, help="val-split scene seed")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GleeModel.from_pretrained(args.model).eval()
    features, shapes, colours, scenes = collect(model, args.num_scenes, args.seed)
    if not shapes:
        raise SystemExit("no object was found by a query; nothing to probe")
    shape_labels = torch.tensor([list(SHAPES).index(s) for s in shapes])
    colour_names = sorted(set(colours))
    colour_labels = torch.tensor([colour_names.index(c) for c in colours])
    train = torch.tensor(scenes) < int(args.num_scenes * TRAIN_SHARE)
    table = Table(title=f"linear probes, {args.model}: {len(shapes)} objects ({int(train.sum())} fit / "
                        f"{int((~train).sum())} held out); chance: shape {1 / len(SHAPES):.3f}")
    for column in ("features", "dim", "shape acc", "colour acc"):
        table.add_column(column, justify="left" if column == "features" else "right")
    for name, rows in features.items():
        x = torch.stack(rows)
        table.add_row(name, str(x.shape[1]), f"{probe_accuracy(x, shape_labels, train):.3f}",
                      f"{probe_accuracy(x, colour_labels, train):.3f}")
    logits = torch.stack(features["class logits"])
    own = float((logits[~train].argmax(1) == shape_labels[~train]).float().mean())
    table.add_row("model's own argmax", "", f"{own:.3f}", "")
    Console().print(table)


if __name__ == "__main__":
    main()
