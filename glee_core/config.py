"""Configuration of a GLEE model, and the named presets.

``GleeConfig`` fixes the architecture; ``get_preset(name)`` returns the official ones exactly as the
official Stage-2 configs build them (``lite-r50``, ``plus-swinl``, ``pro-eva02l``) and the small
``tiny`` test architecture of the parity fixtures. Configs round-trip through ``config.json``.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from glee_core.processing import InputSpec


@dataclass
class TextConfig:
    """The CLIP text tower (transformers ``CLIPTextModel``) and the projection into GLEE's space.

    ``hidden_size`` is also the official ``LANGUAGE_BACKBONE.LANG_DIM``. ``distill_teacher`` keeps the
    frozen distillation copy (``text_encoder_teacher``) of the ``clip_teacher`` checkpoints.
    """

    hidden_size: int = 512
    intermediate_size: int = 2048
    num_layers: int = 12
    num_heads: int = 8
    max_length: int = 77
    distill_teacher: bool = True


@dataclass
class ReferringHeadConfig:
    """Width, depth, attention heads and training dropout of the optional referring head
    (:mod:`glee_core.modeling.referring_head`)."""

    dim: int = 128
    layers: int = 3
    heads: int = 4
    dropout: float = 0.0


@dataclass
class GleeConfig:
    """Architecture of a GLEE model.

    Attributes:
        backbone: registry name of the backbone (``resnet``, ``swin``, ``eva02``).
        backbone_kwargs: constructor arguments of that backbone.
        pixel_decoder: constructor arguments of ``MaskDINOEncoder`` (besides the input shapes).
        decoder: constructor arguments of ``MaskDINODecoder``.
        text: the text tower.
        input: test-time resizing and normalisation.
        hidden_dim: width of queries and features (``MaskDINO.HIDDEN_DIM`` / ``DIM_PROJ``).
        visual_prompt: build the visual-prompt parts (``sot_fuser``).
        early_fusion: fuse text tokens into the pixel decoder.
        test_topk: detections kept per image by the official instance inference.
        video_window: frames per clip in video inference.
        referring_head: the optional referring head (not in the official models), None = without.
        preset: the preset this config came from, if any.
    """

    backbone: str = "resnet"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    pixel_decoder: dict[str, Any] = field(default_factory=dict)
    decoder: dict[str, Any] = field(default_factory=dict)
    text: TextConfig = field(default_factory=TextConfig)
    input: InputSpec = field(default_factory=InputSpec)
    hidden_dim: int = 256
    visual_prompt: bool = True
    early_fusion: bool = True
    test_topk: int = 100
    video_window: int = 10
    referring_head: ReferringHeadConfig | None = None
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["input"].items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GleeConfig":
        """Inverse of :meth:`to_dict`; raises ValueError naming any unknown key (nested ones too)."""
        data = copy.deepcopy(data)
        _check_keys(cls, data)
        if "text" in data:
            data["text"] = TextConfig(**_check_keys(TextConfig, data["text"], "text."))
        if "input" in data:
            spec = _check_keys(InputSpec, data["input"], "input.")
            for key in ("pixel_mean", "pixel_std"):
                if key in spec:
                    spec[key] = tuple(spec[key])
            data["input"] = InputSpec(**spec)
        if data.get("referring_head") is not None:
            data["referring_head"] = ReferringHeadConfig(
                **_check_keys(ReferringHeadConfig, data["referring_head"], "referring_head."))
        return cls(**data)

    def with_input(self, **changes: Any) -> "GleeConfig":
        """A copy with some :class:`InputSpec` fields changed (e.g. ``min_size``, ``max_size``)."""
        new = copy.deepcopy(self)
        new.input = dataclasses.replace(self.input, **_check_keys(InputSpec, changes, "input."))
        return new


def _check_keys(cls: type, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` unchanged if every key is a field of the dataclass ``cls``; else a ValueError naming the others."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(prefix + k for k in unknown)}")
    return data


# Official label encoders of the denoising queries (dataset name -> number of classes); present in
# every official checkpoint.
DN_LABEL_ENCODERS = {
    "coco": 80, "obj365": 100, "vg": 200, "grounding": 1, "ytvis19": 40, "ytvis21": 40,
    "ovis": 25, "uvo": 81, "bdd_det": 10, "bdd_inst": 8,
}


def _decoder(num_queries: int, dec_layers: int, dim_feedforward: int) -> dict[str, Any]:
    return {"num_queries": num_queries, "dec_layers": dec_layers, "dim_feedforward": dim_feedforward}


def _pixel_decoder(in_features: list[str], encoder_layers: int, dim_feedforward: int) -> dict[str, Any]:
    return {"transformer_in_features": in_features, "num_encoder_layers": encoder_layers,
            "dim_feedforward": dim_feedforward}


_RESNET_IN = ["res3", "res4", "res5"]


def _tiny() -> GleeConfig:
    return GleeConfig(
        backbone="resnet",
        backbone_kwargs={"depth": 50, "stem_out_channels": 16, "res2_out_channels": 32, "width_per_group": 8},
        pixel_decoder=_pixel_decoder(_RESNET_IN, 2, 128),
        decoder=_decoder(40, 3, 128),
        text=TextConfig(hidden_size=32, intermediate_size=128, num_layers=2, num_heads=4),
        input=InputSpec(min_size=128, max_size=224),
        preset="tiny",
    )


def _nano() -> GleeConfig:
    """The embedded default: a ResNet-18-style backbone of width 16, width 64 everywhere else, 2 encoder and
    3 decoder layers, 30 queries, a 2-layer CLIP text tower on the CLIP tokenizer, 256-pixel inputs.
    Small enough to train from scratch on 2 CPU cores (see ``glee_core/weights/nano/MODEL_CARD.md``)."""
    width = 64
    return GleeConfig(
        backbone="resnet",
        backbone_kwargs={"depth": 18, "stem_out_channels": 16, "res2_out_channels": 16, "norm": "BN"},
        pixel_decoder={**_pixel_decoder(_RESNET_IN, 2, 4 * width), "conv_dim": width, "mask_dim": width,
                       "num_heads": 4, "fusion": {"embed_dim": 4 * width, "num_heads": 4, "dropout": 0.0}},
        decoder={**_decoder(30, 3, 4 * width), "nheads": 4, "mask_dim": width, "dim_projection": width, "dn_num": 30},
        text=TextConfig(hidden_size=width, intermediate_size=4 * width, num_layers=2, num_heads=4,
                        distill_teacher=False),
        input=InputSpec(min_size=256, max_size=384),
        hidden_dim=width,
        test_topk=30,
        preset="nano",
    )


def _official(preset: str, backbone: str, backbone_kwargs: dict[str, Any], in_features: list[str],
              **changes: Any) -> GleeConfig:
    """The official Stage-2 architectures share everything after the backbone: 6 encoder layers,
    9 decoder layers, 300 queries, FFN 2048, the real CLIP text tower."""
    config = GleeConfig(backbone=backbone, backbone_kwargs=backbone_kwargs,
                        pixel_decoder=_pixel_decoder(in_features, 6, 2048), decoder=_decoder(300, 9, 2048), preset=preset)
    return dataclasses.replace(config, **changes)


def _lite_r50() -> GleeConfig:
    return _official("lite-r50", "resnet", {"depth": 50, "stem_out_channels": 64, "res2_out_channels": 256,
                                            "width_per_group": 64}, _RESNET_IN)


def _plus_swinl() -> GleeConfig:
    return _official("plus-swinl", "swin", {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48],
                                            "window_size": 12, "pretrain_img_size": 384}, _RESNET_IN)


def _pro_eva02l() -> GleeConfig:
    """EVA02-L (the D2EVA02 defaults): no input projections, LSJ test path at 1536."""
    config = _official("pro-eva02l", "eva02", {}, ["p3", "p4", "p5", "p6"], input=InputSpec(lsj=True, lsj_size=1536))
    config.pixel_decoder["project_inputs"] = False
    return config


PRESETS = {"nano": _nano, "tiny": _tiny, "lite-r50": _lite_r50, "plus-swinl": _plus_swinl, "pro-eva02l": _pro_eva02l}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> GleeConfig:
    """The named architecture (a fresh copy). Raises ValueError listing the presets for unknown names."""
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
    return PRESETS[key]()
