"""GleeModel's state dict equals the official manifests for every preset (built on the meta device)."""
from __future__ import annotations

import json

import pytest
import torch

from glee_core.checkpoint import to_official_names
from glee_core.config import get_preset
from glee_core.modeling.glee import GleeModel
from tests.conftest import REFERENCE_DIR, require_reference

PRESETS = {"tiny": "tied_parameters.json", "lite-r50": "tied_parameters_lite_r50.json",
           "plus-swinl": "tied_parameters_plus_swinl.json", "pro-eva02l": "tied_parameters_pro_eva02l.json"}
KIND_COUNTS = {"tiny": (353, 212, 0), "lite-r50": (941, 212, 0), "plus-swinl": (1221, 0, 24),
               "pro-eva02l": (1351, 0, 52)}


def read_manifest(preset: str) -> dict[str, tuple[tuple[int, ...], str, str]]:
    """Official name -> (shape, dtype, kind), without the training-only ``criterion.*`` rows."""
    require_reference()
    rows = (REFERENCE_DIR / f"{preset.replace('-', '_')}_state_dict.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["name", "shape", "dtype", "kind"]
    manifest = {}
    for row in rows[1:]:
        name, shape, dtype, kind = row.split("\t")
        if not name.startswith("criterion."):
            manifest[name] = (tuple(json.loads(shape)), dtype, kind)
    return manifest


@pytest.fixture(scope="module", params=list(PRESETS))
def built(request):
    with torch.device("meta"):
        model = GleeModel(get_preset(request.param))
    return request.param, model, read_manifest(request.param)


def test_state_dict_matches_manifest(built):
    _, model, manifest = built
    ours = {name: (tuple(t.shape), str(t.dtype).removeprefix("torch."))
            for name, t in to_official_names(model.state_dict()).items()}
    expected = {name: (shape, dtype) for name, (shape, dtype, _) in manifest.items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {n: (ours[n], expected[n]) for n in expected if ours[n] != expected[n]} == {}


def test_parameters_and_buffers_match_kind(built):
    preset, model, manifest = built
    params = {"glee." + n for n, _ in model.named_parameters(remove_duplicate=False)}
    buffers = {"glee." + n for n, _ in model.named_buffers(remove_duplicate=False)}
    counts = [0, 0, 0]
    for name, (_, _, kind) in manifest.items():
        counts[("parameter", "buffer", "constant").index(kind)] += 1
        if kind == "parameter":
            assert name in params and name not in buffers, name
        else:
            assert name in buffers and name not in params, f"{name} ({kind})"
    assert tuple(counts) == KIND_COUNTS[preset]


def test_tied_groups_share_one_tensor(built):
    preset, model, _ = built
    groups = json.loads((REFERENCE_DIR / PRESETS[preset]).read_text())
    assert len(groups) == (12 if preset == "pro-eva02l" else 8)

    def resolve(official: str) -> torch.Tensor:
        module, _, attr = official.removeprefix("glee.").rpartition(".")
        return getattr(model.get_submodule(module), attr)

    for group in groups:
        first = resolve(group[0])
        for name in group[1:]:
            assert resolve(name) is first, f"{name} is not tied to {group[0]}"
