"""Shapeworld evaluation: an oracle scores 1, a predictor that is always wrong scores 0."""
from __future__ import annotations

import numpy as np
import pytest

from eval.shapeworld import evaluate_shapeworld
from glee_core.mask_ops import masks_to_boxes
from glee_core.structures import Categories, Detections, Expression
from train.data.shapeworld import CATEGORY_NAMES, generate_scene, referring_expressions, scene_seed
from train.data.shapeworld.referring import KINDS as EXPRESSION_KINDS

NUM_SCENES = 6


class Oracle:
    """Answers from the ground truth of the scene it is shown (looked up by image bytes)."""

    def __init__(self, wrong: bool = False, wrong_kinds: frozenset[str] = frozenset()):
        self.wrong, self.wrong_kinds = wrong, wrong_kinds
        self.scenes = {}
        for i in range(NUM_SCENES):
            scene = generate_scene(scene_seed("test", i), split="test")
            self.scenes[scene.image.tobytes()] = scene

    def predict(self, image, prompt, topk=None):
        scene = self.scenes[image.tobytes()]
        objects = scene.objects
        wrong = self.wrong
        if isinstance(prompt, Categories):
            chosen, labels = objects, [prompt.names.index(o.shape) for o in objects]
        elif isinstance(prompt, Expression):
            rng = np.random.default_rng([scene.seed, 7])
            found = {e.text: e for e in referring_expressions(scene, rng)}[prompt.text]
            chosen, labels = [objects[found.target]], [0]
            wrong = wrong or found.kind in self.wrong_kinds
        else:
            point_or_box = prompt.boxes[0] if prompt.boxes is not None else np.r_[prompt.points[0], prompt.points[0]]
            x, y = int(point_or_box[0] + 1), int(point_or_box[1] + 1)
            chosen, labels = [next(o for o in reversed(objects) if o.mask[min(y, 255), min(x, 255)]
                                   or prompt.boxes is not None and np.allclose(o.box, prompt.boxes[0]))], [0]
        masks = np.stack([o.mask for o in chosen])
        if wrong:
            masks = np.roll(masks, 128, axis=(1, 2))
        return Detections(boxes=masks_to_boxes(masks), scores=np.ones(len(chosen), np.float32),
                          labels=np.array(labels), label_names=list(getattr(prompt, "names", ["x"])),
                          image_size=image.shape[:2], masks=masks)


def test_oracle_scores_one():
    result = evaluate_shapeworld(Oracle(), num_scenes=NUM_SCENES, seed=0, progress=False)
    metrics = result.metrics
    assert metrics["box AP50"] == pytest.approx(1.0) and metrics["mask AP50"] == pytest.approx(1.0)
    assert metrics["box AP"] == pytest.approx(1.0) and metrics["mask AP"] == pytest.approx(1.0)
    assert metrics["referring Acc@0.5"] == 1.0 and metrics["referring cIoU"] == pytest.approx(1.0)
    assert metrics["visual prompt (box) acc"] == 1.0 and metrics["visual prompt (point) acc"] == 1.0
    assert result.counts == {"scenes": NUM_SCENES, "expressions": NUM_SCENES, "visual prompts": 2 * NUM_SCENES}
    assert set(result.per_category) <= set(CATEGORY_NAMES) and all(v == pytest.approx(1.0)
                                                                   for v in result.per_category.values())


def test_wrong_answers_score_zero():
    metrics = evaluate_shapeworld(Oracle(wrong=True), num_scenes=NUM_SCENES, seed=0, progress=False).metrics
    assert metrics["mask AP50"] < 0.05 and metrics["referring Acc@0.5"] == 0.0
    assert metrics["visual prompt (point) acc"] == 0.0 and metrics["referring gIoU"] < 0.05


def test_referring_accuracy_per_expression_kind():
    """Wrong on every kind but attributes: the attribute row is 1, the others 0, and the overall accuracy is the
    attribute expressions' share."""
    result = evaluate_shapeworld(Oracle(wrong_kinds=frozenset(EXPRESSION_KINDS) - {"attribute"}), num_scenes=NUM_SCENES,
                                 seed=0, progress=False)
    per_kind = {key[len("referring Acc@0.5 ("):-1]: value for key, value in result.metrics.items()
                if key.startswith("referring Acc@0.5 (")}
    assert per_kind and set(per_kind) <= set(EXPRESSION_KINDS) and "attribute" in per_kind and len(per_kind) > 1
    assert all(value == (1.0 if kind == "attribute" else 0.0) for kind, value in per_kind.items()), per_kind
    drawn_kinds = []
    for i in range(NUM_SCENES):
        scene = generate_scene(scene_seed("test", i, 0), split="test")
        rng = np.random.default_rng([scene.seed, 7])
        expressions = referring_expressions(scene, rng)
        drawn_kinds.append(expressions[rng.integers(len(expressions))].kind)
    assert result.metrics["referring Acc@0.5"] == pytest.approx(drawn_kinds.count("attribute") / NUM_SCENES)


def test_rejects_no_scenes():
    with pytest.raises(ValueError, match="num_scenes"):
        evaluate_shapeworld(Oracle(), num_scenes=0)
