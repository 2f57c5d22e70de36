"""Multi-scale deformable attention (Deformable DETR), as used by GLEE's pixel decoder and object decoder.

Two plain-PyTorch sampling cores compute the same thing (bilinear, zeros padding, ``align_corners=False``):

* :func:`ms_deform_attn_core_pytorch`: the official CPU fallback, ``grid_sample`` per level then a weighted sum;
* :func:`ms_deform_attn_core_bag`: the four bilinear corners of every sampling point become rows of one
  ``embedding_bag`` (a fused gather + weighted sum), ~2.5x faster on CPU; equal to the reference to ~1e-6.
  Its backward is ~3x slower than ``grid_sample``'s (the scatter of ``embedding_bag``'s gradient).

:class:`MSDeformAttn` uses the bag core on CPU when no gradient is recorded (inference) and the reference
otherwise (training, and other devices, where ``grid_sample`` is fast); another kernel can be plugged in
process-wide with :func:`set_ms_deform_attn_kernel`. With few queries (the object decoder: 300 queries into
~18k positions) fp32 CPU inference samples the unprojected values and projects the samples instead
(:func:`sample_then_project`): the same sums in another order, without a [S, C] x [C, C] projection per layer.

A kernel has the signature ``kernel(value, spatial_shapes, level_start_index, sampling_locations,
attention_weights) -> output`` with

* ``value`` [N, S, M, D] (S = sum of H_l * W_l, M heads, D channels per head),
* ``spatial_shapes`` [L, 2] int64 (H_l, W_l), ``level_start_index`` [L] int64,
* ``sampling_locations`` [N, Lq, M, L, P, 2] (x, y) in [0, 1] of each level (float32 or wider),
* ``attention_weights`` [N, Lq, M, L, P] (softmax over L * P),
* ``output`` [N, Lq, M * D].
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

MSDeformAttnKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _at_least_float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors in float32, or in the first one's dtype when it is wider (float64)."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [t.to(dtype) for t in tensors]


def ms_deform_attn_core_pytorch(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                                sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Reference kernel: bilinear ``grid_sample`` per level, then the attention-weighted sum (shapes: module doc).

    Computes in float32 (or wider) and returns ``value``'s dtype: CPU ``grid_sample`` in bfloat16 is imprecise
    and can return non-finite values for points outside the map. ``level_start_index`` is implied by
    ``spatial_shapes`` here; it is part of the signature for kernels that need it.
    """
    out_dtype = value.dtype
    value, sampling_locations, attention_weights = _at_least_float32(value, sampling_locations, attention_weights)
    n, _, heads, dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    value_per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        value_l = value_per_level[lvl].flatten(2).transpose(1, 2).reshape(n * heads, dim, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N, Lq, M, L, P] -> [N*M, 1, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, num_queries, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, heads * dim, num_queries)
    return out.transpose(1, 2).contiguous().to(out_dtype)


def _bordered_table(value: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
    """value [N, S, T, D] (T tables, e.g. heads) -> [N * T * sum_l (H_l + 2) * (W_l + 2), D]: every level's map of
    every table with a one-pixel zero border, rows in (image, table, level, y, x) order."""
    n, _, tables, dim = value.shape
    maps = value.transpose(1, 2).reshape(n * tables, -1, dim).split([h * w for h, w in shapes], dim=1)
    return torch.cat([F.pad(v.reshape(n * tables, h, w, dim), (0, 0, 1, 1, 1, 1)).flatten(1, 2)
                      for v, (h, w) in zip(maps, shapes)], dim=1).reshape(-1, dim)


def _bag_rows_and_weights(shapes: list[tuple[int, int]], sampling_locations: torch.Tensor,
                          attention_weights: torch.Tensor, tables: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a :func:`_bordered_table` and their weights for one ``embedding_bag`` per (image, head, query).

    ``sampling_locations`` [N, Lq, M, L, P, 2] and ``attention_weights`` [N, Lq, M, L, P] (float32 or wider);
    ``tables``: M (one table per head) or 1 (all heads read one shared table). Returns rows [N*M*Lq, L*P*4]
    (int32 where the table allows) and weights [N*M*Lq, L*P*4]: the four bilinear corners of each point, weighted
    by bilinear weight x attention weight. A corner just outside its map reads the zero border, as
    ``grid_sample``'s zeros padding does; a point lying wholly outside gets weight zero.
    """
    n, num_queries, heads, levels, points, _ = sampling_locations.shape
    dtype, device = sampling_locations.dtype, sampling_locations.device
    bordered = [(h + 2) * (w + 2) for h, w in shapes]
    size = torch.tensor(shapes, dtype=dtype, device=device)  # [L, 2] (H, W)
    height, width = size[:, 0].view(levels, 1), size[:, 1].view(levels, 1)
    index = torch.int32 if n * tables * sum(bordered) < 2 ** 31 else torch.int64  # int32: half the traffic
    row_length = (width.long() + 2).to(index)  # [L, 1] bordered row length
    first_row = torch.tensor([0, *bordered[:-1]], device=device).cumsum(0).view(levels, 1)
    locations = sampling_locations.transpose(1, 2).reshape(n * heads, num_queries, levels, points, 2)
    x = locations[..., 0] * width - 0.5  # [N*M, Lq, L, P] pixel coordinates
    y = locations[..., 1] * height - 0.5
    x0, y0 = x.detach().floor(), y.detach().floor()  # integer corners carry no gradient (as floor's is zero)
    fx, fy = x - x0, y - y0
    # A point with x0 in [-1, W-1] and y0 in [-1, H-1] has its four corners inside the bordered map; any other
    # point has all four outside the map (zero under zeros padding): its weight becomes 0, its corner clamped.
    x0c, y0c = torch.minimum(x0.clamp(min=-1.0), width - 1), torch.minimum(y0.clamp(min=-1.0), height - 1)
    inside = (x0c == x0) & (y0c == y0)
    table_of = torch.arange(n * heads, device=device)
    table_of = table_of if tables == heads else table_of // heads * tables  # (image, head) -> its table
    offset = (table_of.view(-1, 1, 1, 1) * sum(bordered) + first_row + 1).to(index)  # the table, the level, +1 column
    top_left = (y0c.to(index) + 1) * row_length + x0c.to(index) + offset  # [N*M, Lq, L, P]
    below = top_left + row_length
    # corners (y0, x0), (y0, x1), (y1, x0), (y1, x1) of each point: [N*M, Lq, L, P, 4]
    rows = torch.stack([top_left, top_left + 1, below, below + 1], dim=-1)
    attention = attention_weights.transpose(1, 2).reshape(n * heads, num_queries, levels, points) * inside
    upper, lower, left = (1 - fy) * attention, fy * attention, 1 - fx
    weights = torch.stack([upper * left, upper * fx, lower * left, lower * fx], dim=-1)
    bags = n * heads * num_queries
    return rows.reshape(bags, -1), weights.reshape(bags, -1)


def ms_deform_attn_core_bag(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                            sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Fast CPU kernel (shapes: module doc): one ``embedding_bag`` over the bilinear corners of all points.

    Each level's map gets a one-pixel zero border, so a corner just outside the map reads zero, as
    ``grid_sample``'s zeros padding does; a point lying wholly outside gets weight zero. Bag (query, head) sums
    its L * P * 4 corner rows (int32 indices where the table allows) weighted by bilinear weight x attention
    weight. Differentiable in ``value``, ``sampling_locations`` and ``attention_weights`` like the reference;
    computes in float32 (or wider).
    """
    out_dtype = value.dtype
    value, sampling_locations, attention_weights = _at_least_float32(value, sampling_locations, attention_weights)
    n, _, heads, dim = value.shape
    num_queries = sampling_locations.shape[1]
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    rows, weights = _bag_rows_and_weights(shapes, sampling_locations, attention_weights, tables=heads)
    out = F.embedding_bag(rows, _bordered_table(value, shapes), per_sample_weights=weights, mode="sum")
    return out.view(n, heads, num_queries, dim).transpose(1, 2).reshape(n, num_queries, heads * dim).to(out_dtype)


def sampling_table(value_input: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Unprojected values [N, S, C] -> the bordered table [N * sum_l (H_l + 2) * (W_l + 2), C + 1] that
    :func:`sample_then_project` reads: float32 (or wider), with a last channel of 1 on the map and 0 on the border,
    so the sampled last channel is the weight that fell on the map."""
    value = _at_least_float32(value_input)[0]
    value = torch.cat([value, value.new_ones(value.shape[:-1] + (1,))], dim=-1)
    return _bordered_table(value[:, :, None], [(int(h), int(w)) for h, w in spatial_shapes.tolist()])


def sample_then_project(table: torch.Tensor, projection: nn.Linear, spatial_shapes: torch.Tensor,
                        sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """The bag kernel applied to ``projection(value_input)``, computed as ``projection`` of the samples of
    ``value_input`` itself (``table`` from :func:`sampling_table`): per head h, sum_k w_k (x_k W_h' + b_h) =
    (sum_k w_k x_k) W_h' + (sum_k w_k) b_h, the sums running over the corners on the map (zeros padding reads
    0, not b_h). Shapes as the kernels' (module doc) with heads M = ``attention_weights.shape[2]``; returns
    [N, Lq, M * D] float32. Cheaper than projecting every position when few queries sample a large memory.
    """
    n, num_queries, heads = attention_weights.shape[:3]
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    rows, weights = _bag_rows_and_weights(shapes, sampling_locations, attention_weights, tables=1)
    sampled = F.embedding_bag(rows, table, per_sample_weights=weights.to(table.dtype), mode="sum")
    dim = projection.out_features // heads
    bias = projection.bias if projection.bias is not None else projection.weight.new_zeros(projection.out_features)
    matrix = torch.cat([projection.weight, bias[:, None]], dim=1).to(table.dtype)  # [M*D, C+1]
    out = sampled.view(n, heads, num_queries, -1) @ matrix.view(heads, dim, -1).transpose(1, 2)  # [N, M, Lq, D]
    return out.transpose(1, 2).reshape(n, num_queries, heads * dim)


def _records_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an operation on ``tensors`` (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def default_ms_deform_attn_kernel(value: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """The bag core on CPU without autograd, the ``grid_sample`` reference when gradients flow or off the CPU."""
    recording = _records_grad(value, *args)
    core = ms_deform_attn_core_bag if value.device.type == "cpu" and not recording else ms_deform_attn_core_pytorch
    return core(value, *args)


_kernel: MSDeformAttnKernel = default_ms_deform_attn_kernel


def set_ms_deform_attn_kernel(kernel: MSDeformAttnKernel | None) -> None:
    """Use ``kernel`` (signature in the module doc) in every :class:`MSDeformAttn`; None restores the default."""
    global _kernel
    _kernel = default_ms_deform_attn_kernel if kernel is None else kernel


def get_ms_deform_attn_kernel() -> MSDeformAttnKernel:
    """The kernel :class:`MSDeformAttn` currently calls."""
    return _kernel


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query samples ``n_points`` per head and level around its reference.

    Parameters: ``sampling_offsets`` (d_model -> heads*levels*points*2), ``attention_weights``
    (d_model -> heads*levels*points), ``value_proj`` and ``output_proj`` (d_model -> d_model).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: zero offsets weights with a ring of per-head directions as bias, uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value_input: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                padding_mask: torch.Tensor | None = None, shared: dict | None = None) -> torch.Tensor:
        """Attend from ``query`` [N, Lq, C] to the flattened multi-level ``value_input`` [N, S, C].

        ``reference_points`` [N, Lq, L, 2] are (x, y) points or [N, Lq, L, 4] (cx, cy, w, h) boxes, in [0, 1];
        ``spatial_shapes`` [L, 2] int64; ``level_start_index`` [L]; ``padding_mask`` [N, S] True where padded.
        ``shared``: a dict the caller passes to every call on the same ``value_input`` (the object decoder's
        layers), where :func:`sample_then_project`'s table is built once. Returns [N, Lq, C].
        """
        if query.dim() != 3 or value_input.dim() != 3:
            raise ValueError(f"query and value_input must be [N, L, C], got {tuple(query.shape)} "
                             f"and {tuple(value_input.shape)}")
        n, num_queries, _ = query.shape
        num_values = value_input.shape[1]
        if spatial_shapes.shape != (self.n_levels, 2):
            raise ValueError(f"spatial_shapes must be [{self.n_levels}, 2], got {tuple(spatial_shapes.shape)}")
        if int(spatial_shapes.prod(1).sum()) != num_values:
            raise ValueError(f"spatial_shapes cover {int(spatial_shapes.prod(1).sum())} positions, "
                             f"value_input has {num_values}")

        weights = self.attention_weights(query).view(n, num_queries, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, num_queries, self.n_heads, self.n_levels, self.n_points)
        offset_shape = (n, num_queries, self.n_heads, self.n_levels, self.n_points, 2)
        if reference_points.shape[-1] == 2:
            # offsets in pixels of each level / (W_l, H_l), as a product with the reciprocals laid out along the
            # projection's output (a contiguous broadcast, several times faster than the 6-d division; <= 1 ulp)
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            normalizer = normalizer.to(torch.promote_types(query.dtype, torch.float32))
            scale = normalizer.reciprocal().view(1, self.n_levels, 1, 2).expand(offset_shape[2:]).reshape(-1)
            offsets = self.sampling_offsets(query) * scale
            locations = reference_points[:, :, None, :, None, :] + offsets.view(offset_shape)
        elif reference_points.shape[-1] == 4:
            offsets = self.sampling_offsets(query).view(offset_shape)
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {reference_points.shape[-1]}")

        locations = locations.to(torch.promote_types(locations.dtype, torch.float32))
        if self._samples_before_projecting(query, value_input, padding_mask):
            key = (value_input.data_ptr(), value_input._version, tuple(value_input.shape),
                   tuple(spatial_shapes.tolist()))
            cache = {} if shared is None else shared
            if cache.get("sampling_table_of") != key:
                cache["sampling_table"], cache["sampling_table_of"] = sampling_table(value_input, spatial_shapes), key
            out = sample_then_project(cache["sampling_table"], self.value_proj, spatial_shapes, locations, weights)
            return self.output_proj(out)
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, num_values, self.n_heads, self.d_model // self.n_heads)
        out = _kernel(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out)

    def _samples_before_projecting(self, query: torch.Tensor, value_input: torch.Tensor,
                                   padding_mask: torch.Tensor | None) -> bool:
        """Whether :func:`sample_then_project` serves this call: fp32 CPU inference with the default kernel, not
        traced (ONNX export), no padding mask, a plain ``nn.Linear`` value projection (not LoRA-wrapped), and fewer
        gathered floats (corners x (C + 1)) than 1/16 of the projection's multiply-adds (measured on this CPU: a
        gathered float costs about as much as 13 multiply-adds of the projection)."""
        recording = _records_grad(query, value_input, *self.value_proj.parameters())
        if (recording or padding_mask is not None or _kernel is not default_ms_deform_attn_kernel
                or value_input.device.type != "cpu" or value_input.dtype != torch.float32
                or type(self.value_proj) is not nn.Linear or self.value_proj.weight.dtype != torch.float32
                or torch.is_autocast_enabled("cpu") or torch.jit.is_tracing()):
            return False
        corners = query.shape[1] * self.n_heads * self.n_levels * self.n_points * 4
        return corners * (self.d_model + 1) * 16 <= value_input.shape[1] * self.d_model * self.d_model


def xavier_init_with_deformable_(module: nn.Module) -> None:
    """Official init of deformable transformers: Xavier-uniform on every matrix, then each
    :class:`MSDeformAttn`'s own init."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    for m in module.modules():
        if isinstance(m, MSDeformAttn):
            m.reset_parameters()
