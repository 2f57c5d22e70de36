"""shapeworld: a procedural world of coloured shapes with exact masks, referring expressions, reasoning
queries and videos (deterministic from a seed; train / val / test splits never overlap)."""
from train.data.shapeworld.reasoning import ReasoningQuery, reasoning_queries
from train.data.shapeworld.referring import (
    Description,
    ReferringExpression,
    ReferringForm,
    attribute_phrase,
    evaluate,
    matches,
    negative_expressions,
    referring_expressions,
)
from train.data.shapeworld.scene import (
    SPLITS,
    Placement,
    Scene,
    SceneConfig,
    SceneObject,
    compose_scene,
    draw_objects,
    generate_scene,
    generate_scenes,
    scene_seed,
)
from train.data.shapeworld.video import Video, VideoConfig, VideoFrame, generate_video, generate_videos
from train.data.shapeworld.vocab import CATEGORY_NAMES, COLORS, MIXTURES, SHAPES, SIZES, ShapeKind

__all__ = [
    "CATEGORY_NAMES",
    "COLORS",
    "MIXTURES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Description",
    "Placement",
    "ReasoningQuery",
    "ReferringExpression",
    "ReferringForm",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "ShapeKind",
    "Video",
    "VideoConfig",
    "VideoFrame",
    "attribute_phrase",
    "compose_scene",
    "draw_objects",
    "evaluate",
    "generate_scene",
    "generate_scenes",
    "generate_video",
    "generate_videos",
    "matches",
    "negative_expressions",
    "reasoning_queries",
    "referring_expressions",
    "scene_seed",
]
