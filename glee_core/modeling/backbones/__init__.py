"""Image backbones by name: ``build_backbone("resnet" | "swin" | ..., **kwargs)``.

Each backbone module registers its class with ``@register_backbone(name)``; importing it below fills
``BACKBONES``. A new backbone needs its decorator and one import line here.
"""
from __future__ import annotations

from collections.abc import Callable

from .base import Backbone

BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Class decorator adding a :class:`Backbone` subclass to ``BACKBONES`` under ``name``."""

    def register(cls: type[Backbone]) -> type[Backbone]:
        if name in BACKBONES and BACKBONES[name] is not cls:
            raise ValueError(f"backbone name {name!r} is already registered to {BACKBONES[name].__name__}")
        BACKBONES[name] = cls
        return cls

    return register


def build_backbone(name: str, **kwargs) -> Backbone:
    """Construct the backbone registered as ``name`` with its constructor keyword arguments."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)


from .resnet import ResNet  # noqa: E402  (registers "resnet")
from .swin import SwinTransformer  # noqa: E402  (registers "swin")
from .eva02 import D2EVA02  # noqa: E402  (registers "eva02")

__all__ = ["BACKBONES", "Backbone", "D2EVA02", "ResNet", "SwinTransformer", "build_backbone", "register_backbone"]
