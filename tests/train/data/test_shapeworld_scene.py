"""shapeworld scenes: vocabulary, geometry, determinism, split disjointness, masks vs pixels, occlusion."""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from glee_core.mask_ops import masks_to_boxes
from train.data.shapeworld import CATEGORY_NAMES, COLORS, MIXTURES, SHAPES, SIZES, SceneConfig
from train.data.shapeworld.scene import (
    Placement,
    draw_objects,
    generate_scene,
    generate_scenes,
    polygon_area,
    rasterize,
    scene_seed,
    shape_polygon,
    texture_shade,
)


@pytest.fixture(scope="module")
def scenes():
    return list(generate_scenes("train", 40, seed=3))


def test_vocabulary_sizes_and_mixtures():
    assert len(SHAPES) >= 8 and len(COLORS) >= 8
    assert CATEGORY_NAMES == list(SHAPES)
    kinds = ("circle", "triangle", "square", "diamond", "pentagon", "hexagon", "star", "cross")
    assert [SHAPES[name].corners for name in kinds] == [0, 3, 4, 4, 5, 6, 10, 12]
    assert [name for name, kind in SHAPES.items() if kind.can_roll] == ["circle"]
    assert MIXTURES[frozenset(("blue", "yellow"))] == "green"
    assert MIXTURES[frozenset(("red", "yellow"))] == "orange"
    assert all(result in COLORS and set(pair) <= set(COLORS) for pair, result in MIXTURES.items())
    rgb = np.array(list(COLORS.values()), dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=2) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 60  # well separated
    for (_, (low, high)), (_, (next_low, _)) in zip(list(SIZES.items()), list(SIZES.items())[1:]):
        assert low < high and next_low / high >= 1.2


def test_outlines_hand_computed():
    assert polygon_area("square", 10.0) == pytest.approx(200.0)
    assert polygon_area("hexagon", 10.0) == pytest.approx(1.5 * math.sqrt(3) * 100.0)
    assert polygon_area("triangle", 10.0) == pytest.approx(0.75 * math.sqrt(3) * 100.0)
    assert polygon_area("circle", 10.0) == pytest.approx(math.pi * 100.0, rel=0.01)
    assert len(shape_polygon("star", (0, 0), 1.0, 0.0)) == 10
    cross = shape_polygon("cross", (0, 0), 1.0, 0.0)
    assert len(cross) == 12 and np.allclose(np.linalg.norm(cross, axis=1).max(), 1.0)
    square = shape_polygon("square", (50.0, 40.0), 10.0, 0.0)
    assert np.allclose(np.sort(square[:, 0]), [50 - 10 / math.sqrt(2)] * 2 + [50 + 10 / math.sqrt(2)] * 2)
    # the diamond is a narrow rhombus: width / height = 0.55
    diamond = rasterize(Placement("diamond", "red", "large", (50.0, 50.0), 40.0, 0.0, None), 100, 100)
    ys, xs = np.nonzero(diamond)
    assert (np.ptp(xs) + 1) / (np.ptp(ys) + 1) == pytest.approx(0.55, abs=0.04)
    with pytest.raises(ValueError, match="unknown shape 'blob'"):
        shape_polygon("blob", (0, 0), 1.0, 0.0)


def test_rasterized_area_matches_outline():
    for shape in SHAPES:
        placement = Placement(shape, "red", "large", (64.3, 60.7), 30.0, 10.0 if shape == "square" else 17.0, None)
        mask = rasterize(placement, 128, 128)
        assert mask.sum() == pytest.approx(polygon_area(shape, 30.0), rel=0.1), shape  # PIL fills edge pixels


def test_scene_seed_disjoint_and_validated():
    seen = {}
    for seed, split, index in itertools.product(range(4), ("train", "val", "test"), (0, 1, 7, 2**32 - 1)):
        value = scene_seed(split, index, seed)
        assert value not in seen, (seen.get(value), (seed, split, index))
        seen[value] = (seed, split, index)
    assert scene_seed("val", 5, 2) == ((2 * 3 + 1) << 32) | 5
    with pytest.raises(ValueError, match="split must be one of"):
        scene_seed("dev", 0)
    with pytest.raises(ValueError, match="index must be in"):
        scene_seed("train", 2**32)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        scene_seed("train", 0, -1)


def test_deterministic_and_split_dependent():
    first, again = generate_scene(scene_seed("train", 11)), generate_scene(scene_seed("train", 11))
    assert np.array_equal(first.image, again.image)
    assert len(first.objects) == len(again.objects)
    for a, b in zip(first.objects, again.objects):
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.box, b.box) and a.shape == b.shape
    train = next(generate_scenes("train", 1, start=11))
    val = next(generate_scenes("val", 1, start=11))
    assert np.array_equal(train.image, first.image) and train.split == "train" and val.split == "val"
    assert not np.array_equal(train.image, val.image)


def test_masks_agree_with_pixels_and_boxes(scenes):
    for scene in scenes:
        assert 1 <= len(scene.objects) <= 6
        masks = np.stack([obj.mask for obj in scene.objects])
        assert masks.sum(axis=0).max() <= 1  # visible masks are disjoint
        assert np.array_equal(np.stack([obj.box for obj in scene.objects]), masks_to_boxes(masks))
        for obj in scene.objects:
            pixels = {tuple(p) for p in scene.image[obj.mask]}
            tones = {COLORS[obj.color]} | ({texture_shade(obj.color)} if obj.texture else set())
            assert pixels <= tones and COLORS[obj.color] in pixels
            assert obj.box.dtype == np.float32 and obj.area == int(obj.mask.sum())
            assert obj.category_id == CATEGORY_NAMES.index(obj.shape) + 1


def test_textures_use_two_tones_of_the_base_colour(scenes):
    textured = [(scene, obj) for scene in scenes for obj in scene.objects if obj.texture]
    assert len(textured) >= 5 and {obj.texture for _, obj in textured} == {"stripes", "dots", "checker"}
    for scene, obj in textured:
        assert len({tuple(p) for p in scene.image[obj.mask]}) == 2


def test_draw_objects_changes_only_masked_pixels():
    background = np.full((64, 64, 3), 50, np.uint8)
    placements = [
        Placement("square", "red", "large", (20.0, 20.0), 15.0, 0.0, None),
        Placement("circle", "blue", "large", (32.0, 30.0), 14.0, 0.0, "stripes"),
    ]
    image, objects = draw_objects(background, placements)
    union = objects[0].mask | objects[1].mask
    assert np.all(image[~union] == 50) and np.all(image[union] != 50)
    full_square = rasterize(placements[0], 64, 64)
    assert np.array_equal(objects[0].mask, full_square & ~rasterize(placements[1], 64, 64))
    assert np.all(image[objects[0].mask] == COLORS["red"])


def test_occlusion_and_inside_bounds(scenes):
    config = SceneConfig()
    for scene in scenes:
        for obj in scene.objects:
            full = rasterize(obj, *scene.image.shape[:2])
            assert obj.area >= max(0.5 * full.sum(), config.min_visible_pixels)
            assert full.sum() >= 0.7 * polygon_area(obj.shape, obj.radius)
            limit = SHAPES[obj.shape].max_rotation
            assert limit is None or abs(obj.rotation) <= limit
    for scene in scenes:  # shapes of one colour never touch: they would read as one blob
        for a, b in itertools.combinations(scene.objects, 2):
            if a.color == b.color:
                grown = binary_dilation(rasterize(a, 256, 256))  # 4-neighbourhood
                assert not (grown & rasterize(b, 256, 256)).any()
    occluded = sum(obj.area < rasterize(obj, 256, 256).sum() for scene in scenes for obj in scene.objects)
    assert occluded >= 5  # occlusion really happens


def test_config_validation_and_speed():
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        SceneConfig(min_objects=4, max_objects=2)
    config = SceneConfig(min_objects=6, max_objects=6)
    generate_scene(0, config)
    start = time.perf_counter()
    for seed in range(10):
        assert len(generate_scene(seed, config).objects) == 6
    assert (time.perf_counter() - start) / 10 < 0.05  # target 20 ms; slack for a loaded machine
