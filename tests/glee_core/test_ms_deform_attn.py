"""Multi-scale deformable attention: both cores against explicit bilinear sampling (values and gradients), the
kernel hook, sampling-location formulas, and a bfloat16 run."""
from __future__ import annotations

import math

import pytest
import torch

from glee_core.modeling.ms_deform_attn import (
    MSDeformAttn,
    default_ms_deform_attn_kernel,
    get_ms_deform_attn_kernel,
    ms_deform_attn_core_bag,
    ms_deform_attn_core_pytorch,
    sample_then_project,
    sampling_table,
    set_ms_deform_attn_kernel,
)

CORES = [ms_deform_attn_core_pytorch, ms_deform_attn_core_bag]

SHAPES = torch.tensor([[3, 4], [2, 3]])
LEVEL_START = torch.tensor([0, 12])


def naive_core(value, spatial_shapes, level_start_index, locations, weights):
    """Bilinear sampling written out per point: pixel centres at (i + 0.5) / size, zeros outside the map."""
    n, _, heads, dim = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    out = torch.zeros(n, num_queries, heads, dim, dtype=value.dtype)
    for b in range(n):
        for q in range(num_queries):
            for m in range(heads):
                for lvl in range(levels):
                    h, w = spatial_shapes[lvl].tolist()
                    start = int(level_start_index[lvl])
                    for p in range(points):
                        x = locations[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                            if 0 <= xi < w and 0 <= yi < h:
                                bilinear = (1 - abs(x - xi)) * (1 - abs(y - yi))
                                out[b, q, m] += (weights[b, q, m, lvl, p] * bilinear
                                                 * value[b, start + yi * w + xi, m])
    return out.flatten(2)


def random_inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, heads, dim, num_queries, points = 2, 2, 3, 5, 3
    value = torch.randn(n, int(SHAPES.prod(1).sum()), heads, dim, generator=g, dtype=dtype)
    # points beyond [0, 1] exercise the zero padding
    locations = torch.rand(n, num_queries, heads, 2, points, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    weights = torch.rand(n, num_queries, heads, 2, points, generator=g, dtype=dtype)
    return value, locations, weights / weights.sum((-1, -2), keepdim=True)


@pytest.mark.parametrize("core", CORES)
def test_core_matches_explicit_bilinear_sampling(core):
    value, locations, weights = random_inputs()
    locations[0, 0, 0, 0, :, :] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 1 / 3]])  # borders, pixel edges
    expected = naive_core(value, SHAPES, LEVEL_START, locations, weights)
    actual = core(value, SHAPES, LEVEL_START, locations, weights)
    assert actual.shape == (2, 5, 6) and actual.dtype == torch.float64
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0)


def test_bag_core_gradients_equal_the_reference():
    inputs = [t.requires_grad_() for t in random_inputs(seed=3)]
    grads = []
    for core in CORES:
        out = core(inputs[0], SHAPES, LEVEL_START, inputs[1], inputs[2])
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
                                         .sum(), inputs))
    for name, reference, bag in zip(("value", "locations", "weights"), *grads):
        assert reference.abs().max() > 0, name
        torch.testing.assert_close(bag, reference, atol=1e-10, rtol=0, msg=name)


def test_default_kernel_is_the_bag_core_on_cpu_without_autograd(monkeypatch):
    """Inference takes the fast bag core; training the grid_sample core, whose backward is ~3x faster."""
    calls = []
    monkeypatch.setattr("glee_core.modeling.ms_deform_attn.ms_deform_attn_core_bag",
                        lambda *args: calls.append("bag") or ms_deform_attn_core_pytorch(*args))
    monkeypatch.setattr("glee_core.modeling.ms_deform_attn.ms_deform_attn_core_pytorch",
                        lambda *args: calls.append("grid") or ms_deform_attn_core_bag(*args))
    value, locations, weights = random_inputs()
    default_ms_deform_attn_kernel(value, SHAPES, LEVEL_START, locations, weights)
    default_ms_deform_attn_kernel(value, SHAPES, LEVEL_START, locations.requires_grad_(), weights)
    with torch.no_grad():
        default_ms_deform_attn_kernel(value, SHAPES, LEVEL_START, locations, weights)
    assert calls == ["bag", "grid", "bag"] and get_ms_deform_attn_kernel() is default_ms_deform_attn_kernel


def _module(d_model=8, n_levels=2, n_heads=2, n_points=3, seed=0):
    torch.manual_seed(seed)
    module = MSDeformAttn(d_model, n_levels, n_heads, n_points)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("box", [False, True])
def test_kernel_hook_receives_official_sampling_locations(box):
    module = _module().double()
    g = torch.Generator().manual_seed(1)
    query = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    memory = torch.randn(2, 18, 8, generator=g, dtype=torch.float64)
    ref = torch.rand(2, 5, 2, 4 if box else 2, generator=g, dtype=torch.float64)
    seen = {}

    def recording_kernel(value, spatial_shapes, level_start_index, locations, weights):
        seen.update(value=value, locations=locations, weights=weights)
        return naive_core(value, spatial_shapes, level_start_index, locations, weights)

    set_ms_deform_attn_kernel(recording_kernel)
    try:
        assert get_ms_deform_attn_kernel() is recording_kernel
        out = module(query, ref, memory, SHAPES, LEVEL_START)
    finally:
        set_ms_deform_attn_kernel(None)
    assert get_ms_deform_attn_kernel() is default_ms_deform_attn_kernel

    offsets = module.sampling_offsets(query).view(2, 5, 2, 2, 3, 2)
    if box:
        expected = ref[:, :, None, :, None, :2] + offsets / 3 * ref[:, :, None, :, None, 2:] * 0.5
    else:
        normalizer = SHAPES.flip(-1).to(torch.float64)  # (W, H) per level
        expected = ref[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    torch.testing.assert_close(seen["locations"], expected)
    torch.testing.assert_close(seen["weights"].sum((-1, -2)), torch.ones(2, 5, 2, dtype=torch.float64))
    torch.testing.assert_close(out, module(query, ref, memory, SHAPES, LEVEL_START))


def test_bfloat16_run_is_finite_and_close_to_float32():
    module = _module(d_model=32, n_levels=2, n_heads=4, n_points=4)
    with torch.no_grad():
        module.sampling_offsets.bias.mul_(4.0)  # many points outside the maps
    g = torch.Generator().manual_seed(2)
    query = torch.randn(2, 18, 32, generator=g)
    ref = torch.rand(2, 18, 2, 2, generator=g)
    ref32 = module(query, ref, query, SHAPES, LEVEL_START)
    out = module.to(torch.bfloat16)(query.bfloat16(), ref.bfloat16(), query.bfloat16(), SHAPES, LEVEL_START)
    assert out.dtype == torch.bfloat16 and out.shape == ref32.shape
    assert torch.isfinite(out).all()
    assert (out.float() - ref32).abs().max() < 0.05 * max(1.0, ref32.abs().max().item())


def test_input_validation():
    module = _module()
    query = torch.randn(1, 5, 8)
    with pytest.raises(ValueError, match="spatial_shapes cover"):
        module(query, torch.rand(1, 5, 2, 2), torch.randn(1, 17, 8), SHAPES, LEVEL_START)
    with pytest.raises(ValueError, match="2 or 4"):
        module(query, torch.rand(1, 5, 2, 3), torch.randn(1, 18, 8), SHAPES, LEVEL_START)
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(10, 2, 4, 3)


def test_sample_then_project_equals_projecting_every_position():
    """Few queries: the samples of the unprojected memory, projected, equal the official projected-then-sampled
    values, bias included only for the corners on the map (points beyond [0, 1] exercise the border)."""
    value_input, locations, weights = random_inputs()
    value_input = value_input.flatten(2)  # [2, 18, 6] unprojected, 6 channels
    torch.manual_seed(0)
    projection = torch.nn.Linear(6, 6, dtype=torch.float64)  # 2 heads x 3 channels, non-zero bias
    expected = ms_deform_attn_core_pytorch(projection(value_input).view(2, 18, 2, 3), SHAPES, LEVEL_START,
                                           locations, weights)
    table = sampling_table(value_input, SHAPES)
    assert table.shape == (2 * (5 * 6 + 4 * 5), 7) and table[:, -1].sum() == 2 * 18  # ones on the maps only
    got = sample_then_project(table, projection, SHAPES, locations, weights)
    torch.testing.assert_close(got, expected.detach())


def test_module_samples_before_projecting_only_where_it_pays_and_is_safe():
    shapes, start = torch.tensor([[24, 20], [12, 10]]), torch.tensor([0, 480])
    module = _module(d_model=32, n_levels=2, n_heads=4, n_points=2)
    with torch.no_grad():
        module.sampling_offsets.bias.mul_(8.0)  # points beyond the maps
    g = torch.Generator().manual_seed(3)
    memory, query = torch.randn(1, 600, 32, generator=g), torch.randn(1, 2, 32, generator=g)
    ref = torch.rand(1, 2, 2, 4, generator=g)
    set_ms_deform_attn_kernel(ms_deform_attn_core_pytorch)  # another kernel: the official order
    try:
        with torch.no_grad():
            official = module(query, ref, memory, shapes, start, shared=(untouched := {}))
    finally:
        set_ms_deform_attn_kernel(None)
    assert untouched == {}
    shared = {}
    with torch.no_grad():
        first = module(query, ref, memory, shapes, start, shared=shared)
        table = shared["sampling_table"]
        second = module(query * 0.5, ref, memory, shapes, start, shared=shared)
        assert shared["sampling_table"] is table  # built once per memory
        memory.add_(1.0)  # changed in place: rebuilt
        third = module(query, ref, memory, shapes, start, shared=shared)
        assert shared["sampling_table"] is not table
        memory.sub_(1.0)
        many = module(torch.randn(1, 400, 32, generator=g), torch.rand(1, 400, 2, 4, generator=g), memory, shapes,
                      start, shared=(projected_first := {}))
    torch.testing.assert_close(first, official, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(second, first) and not torch.allclose(third, first)
    assert projected_first == {} and many.shape == (1, 400, 32)  # 400 queries: projecting every position is cheaper
    out = module(query, ref, memory, shapes, start, shared=(with_grad := {}))  # training: the official order
    assert with_grad == {} and out.requires_grad
    torch.testing.assert_close(out.detach(), official, rtol=1e-5, atol=1e-5)
