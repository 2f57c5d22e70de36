"""EVA02-L backbone (GLEE Pro): state-dict layout, rotary-table truncation quirk, real-size parity."""
from __future__ import annotations

import json
import math

import pytest
import torch

from glee_core.modeling.backbones import BACKBONES
from glee_core.modeling.backbones.eva02 import D2EVA02, VisionRotaryEmbedding
from tests.conftest import assert_close, load_case, require_reference, seeded_state

PREFIX = "glee.backbone."


def backbone_manifest() -> list[tuple[str, list[int], str, str]]:
    """(name without prefix, shape, dtype, kind) of every ``glee.backbone.*`` row of the Pro manifest, in order."""
    rows = (require_reference() / "pro_eva02l_state_dict.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        name, shape, dtype, kind = row.split("\t")
        if name.startswith(PREFIX):
            out.append((name[len(PREFIX):], json.loads(shape), dtype, kind))
    return out


def tiny_model(**kwargs) -> D2EVA02:
    """4x4-token global rotary table (img_size 64 / patch 16), 4x4 windows, block 0 windowed, block 1 global."""
    torch.manual_seed(0)
    config = dict(img_size=64, embed_dim=64, depth=2, num_heads=4, window_size=4, window_block_indexes=(0,))
    return D2EVA02(**{**config, **kwargs}).eval()


def test_registered() -> None:
    assert BACKBONES["eva02"] is D2EVA02


def test_pro_state_dict_matches_manifest() -> None:
    manifest = backbone_manifest()
    with torch.device("meta"):
        model = D2EVA02()
    state = model.state_dict(keep_vars=True)
    assert [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()] == [
        (name, shape, dtype) for name, shape, dtype, _ in manifest
    ]
    parameters = {name for name, _ in model.named_parameters()}
    constants = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    assert parameters == {name for name, _, _, kind in manifest if kind == "parameter"}
    assert constants == {name for name, _, _, kind in manifest if kind == "constant"}
    groups = json.loads((require_reference() / "tied_parameters_pro_eva02l.json").read_text())
    backbone_groups = [[n[len(PREFIX):] for n in g] for g in groups if g[0].startswith(PREFIX)]
    assert len(backbone_groups) == 4
    for group in backbone_groups:
        assert all(state[name] is state[group[0]] for name in group), group
    assert model.out_features == ["p3", "p4", "p5", "p6"]
    assert model.out_strides == {"p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert model.size_divisibility == 32


def test_rope_uses_first_rows_of_table() -> None:
    """A 2x3 grid (6 tokens) against a 4x4 table takes rows 0..5, i.e. grid positions (0,0..3), (1,0..1)."""
    dim, pt_len, ft_len = 4, 16, 4
    rope = VisionRotaryEmbedding(dim, pt_seq_len=pt_len, ft_seq_len=ft_len)
    assert rope.freqs_cos.shape == (ft_len * ft_len, 2 * dim)
    x = torch.randn(1, 2, 6, 2 * dim, generator=torch.Generator().manual_seed(0))

    def rotated(grid_width: int) -> torch.Tensor:
        inv_freq = [10000.0 ** (-2 * i / dim) for i in range(dim // 2)]
        out = torch.empty_like(x)
        for token in range(x.shape[2]):
            row, col = divmod(token, grid_width)
            angles = [row * pt_len / ft_len * f for f in inv_freq] + [col * pt_len / ft_len * f for f in inv_freq]
            for pair, angle in enumerate(angles):
                x0, x1 = x[..., token, 2 * pair], x[..., token, 2 * pair + 1]
                out[..., token, 2 * pair] = x0 * math.cos(angle) - x1 * math.sin(angle)
                out[..., token, 2 * pair + 1] = x1 * math.cos(angle) + x0 * math.sin(angle)
        return out

    assert_close(rope(x), rotated(grid_width=ft_len), atol=1e-5, name="truncated table")
    assert (rope(x) - rotated(grid_width=3)).abs().max() > 1e-2, "the quirk must not use the true 2x3 positions"
    with pytest.raises(ValueError, match="exceed the rotary table"):
        rope(torch.zeros(1, 2, ft_len * ft_len + 1, 2 * dim))


def test_tiny_model_shapes_and_token_limit() -> None:
    model = tiny_model()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "p3": (1, 256, 8, 8), "p4": (1, 256, 4, 4), "p5": (1, 256, 2, 2), "p6": (1, 256, 1, 1),
        }
        out = model(torch.randn(2, 3, 48, 32))
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "p3": (2, 256, 6, 4), "p4": (2, 256, 3, 2), "p5": (2, 256, 1, 1), "p6": (2, 256, 1, 1),
        }
        with pytest.raises(ValueError, match="20 tokens exceed the rotary table of 16"):
            model(torch.randn(1, 3, 80, 64))
        with pytest.raises(ValueError, match="expected images"):
            model(torch.randn(1, 4, 64, 64))
    four = tiny_model(scale_factors=(4.0, 2.0, 1.0, 0.5))
    assert four.out_features == ["p2", "p3", "p4", "p5", "p6"]
    assert {k: tuple(v.shape) for k, v in four(torch.randn(1, 3, 32, 32)).items()}["p2"] == (1, 256, 8, 8)


def test_pro_real_parity() -> None:
    """Seeded Pro weights; 160x288 input: global blocks use rows 0..179 of the 96x96 table, windows pad to 16x32."""
    case = load_case("pro_eva02l_a_category")
    state = {k[len("backbone."):]: v for k, v in seeded_state("pro-eva02l").items() if k.startswith("backbone.")}
    model = D2EVA02().eval()
    result = model.load_state_dict(state, strict=False)
    constants = {name for name, _, _, kind in backbone_manifest() if kind == "constant"}
    assert set(result.missing_keys) == constants and not result.unexpected_keys
    del state
    with torch.no_grad():
        out = model(case["input.image"])
    for name in ("p4", "p5", "p6"):
        assert_close(out[name], case[f"backbone.{name}"], atol=1e-4, name=name)
