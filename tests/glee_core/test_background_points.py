"""Background points (``point_labels`` 0) exclude objects: with the nano model on a held-out scene."""
from __future__ import annotations

import numpy as np
import pytest

from glee_core.mask_ops import interior_point
from glee_core.predictor import GleePredictor
from glee_core.structures import VisualPrompt
from train.data.shapeworld import generate_scene, scene_seed


@pytest.fixture(scope="module")
def scene_and_predictor():
    return generate_scene(scene_seed("test", 3), split="test"), GleePredictor.from_pretrained("nano")


def test_background_point_on_the_chosen_object_excludes_it(scene_and_predictor):
    scene, predictor = scene_and_predictor
    for obj in scene.objects:  # an object whose point prompt's mask covers the point itself
        point = interior_point(obj.mask)
        x, y = int(point[0]), int(point[1])
        alone = predictor.predict(scene.image, VisualPrompt(points=[point]))
        if alone.masks[0, y, x]:
            break
    else:
        pytest.fail("no point prompt's mask covers its own point")
    excluded = predictor.predict(scene.image, VisualPrompt(points=[point, point], point_labels=[1, 0]))
    # Every result avoids the background point; the label names count foreground prompts only.
    assert excluded.label_names == ["prompt 0"]
    assert not excluded.masks[:, y, x].any()
    assert len(excluded) == 0 or not np.array_equal(excluded.masks[0], alone.masks[0])


def test_background_point_off_the_object_changes_nothing(scene_and_predictor):
    scene, predictor = scene_and_predictor
    point = interior_point(scene.objects[0].mask)
    alone = predictor.predict(scene.image, VisualPrompt(points=[point]))
    free = np.argwhere(~alone.masks[0])[0]  # (y, x) outside the chosen mask
    both = predictor.predict(scene.image, VisualPrompt(points=[point, [free[1], free[0]]], point_labels=[1, 0]))
    assert len(both) == 1
    np.testing.assert_array_equal(both.masks[0], alone.masks[0])
    np.testing.assert_allclose(both.scores, alone.scores)
