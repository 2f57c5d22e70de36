"""Typed YAML configs shared by the trainers: nested dataclasses built from mappings, unknown keys refused by name
(a typo must never fall back to a default silently), each value checked against its field's type by pydantic
(YAML's ``3e-4`` is a string; it becomes the float 0.0003, and ``lr: fast`` is refused naming ``optim.lr``).

A YAML file may start from another: ``base: other.yaml`` (a path relative to the file) takes that file's mapping,
itself possibly based on a third, and overrides it key by key, mappings merged recursively (as mmengine's
``_base_``), so a follow-up recipe states only what it changes."""
from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

T = TypeVar("T")


def build(cls: type[T], data: Any, prefix: str = "") -> T:
    """``cls(**data)`` with nested dataclass fields built recursively and tuple fields converted; ``prefix`` names
    the section in errors (``optim.``)."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(prefix + k for k in unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value, f"{prefix}{key}.")
        else:
            try:
                kwargs[key] = _type_adapter(hint).validate_python(value)
            except pydantic.ValidationError:
                name = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
                raise ValueError(f"{prefix}{key} must be {name or str(hint).replace('typing.', '')}, "
                                 f"got {value!r}") from None
    return cls(**kwargs)


@functools.lru_cache(maxsize=None)
def _type_adapter(hint: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(hint)


BASE_KEY = "base"


def load_yaml(cls: type[T], path: str | Path) -> T:
    """:func:`build` of the mapping in the YAML file ``path`` (over its ``base`` chain); errors name the file."""
    path = Path(path)
    data = read_mapping(path)
    try:
        return build(cls, data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def read_mapping(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of the YAML file ``path`` merged over the mapping of its ``base`` file, recursively."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ValueError(f"cannot read config {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config sections, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ValueError(f"{path}: {BASE_KEY} must be the path of another YAML config, got {base!r}")
    base_path = (path.parent / base).resolve()
    chain = (*_chain, path.resolve())
    if base_path in chain:
        raise ValueError(f"{path}: {BASE_KEY} chain loops back to {base_path}: {' -> '.join(map(str, chain))}")
    return merged(read_mapping(base_path, chain), data)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s keys put over it; where both hold a mapping the two are merged the same way."""
    out = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


class YamlConfig:
    """Mixin of the top-level config dataclasses: built from a mapping or a YAML file, dumped as a dict."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return build(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path):
        return load_yaml(cls, path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
