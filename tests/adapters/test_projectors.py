"""Projectors: shapes, what each input changes, and errors."""
from __future__ import annotations

import pytest
import torch

from adapters.projectors import ObjectProjector, SegProjector


def test_seg_projector_makes_l_prompt_tokens_per_state():
    projector = SegProjector(llm_hidden=16, prompt_dim=8, num_tokens=3)
    out = projector(torch.randn(5, 16))
    assert out.shape == (5, 3, 8)
    with pytest.raises(ValueError, match=r"expects \[N, 16\], got \(5, 8\)"):
        projector(torch.randn(5, 8))


def test_seg_projector_rows_are_independent():
    projector = SegProjector(llm_hidden=16, prompt_dim=8)
    x = torch.randn(4, 16)
    y = x.clone()
    y[1] += 1.0
    a, b = projector(x), projector(y)
    assert torch.equal(a[[0, 2, 3]], b[[0, 2, 3]]) and not torch.allclose(a[1], b[1])


def test_object_projector_sees_content_and_geometry():
    projector = ObjectProjector(query_dim=8, llm_hidden=16)
    queries, boxes, scores = torch.randn(2, 5, 8), torch.rand(2, 5, 4), torch.rand(2, 5)
    out = projector(queries, boxes, scores)
    assert out.shape == (2, 5, 16)
    moved = boxes.clone()
    moved[0, 3, 0] += 0.3  # same object, other place
    changed = projector(queries, moved, scores) != out
    assert changed[0, 3].all() and not changed[0, :3].any() and not changed[1].any()
    with pytest.raises(ValueError, match=r"boxes must be \[2, 5, 4\]"):
        projector(queries, boxes[..., :2], scores)
    with pytest.raises(ValueError, match=r"expects queries \[..., K, 8\]"):
        projector(torch.randn(2, 5, 7), boxes, scores)
    regional = ObjectProjector(query_dim=8, llm_hidden=16, region_parts=(3,))
    assert regional(queries, boxes, scores, torch.rand(2, 5, 3)).shape == (2, 5, 16)
    with pytest.raises(ValueError, match=r"regions must be \[2, 5, 3\], got None"):
        regional(queries, boxes, scores)
    with pytest.raises(ValueError, match="raw_parts indices"):
        ObjectProjector(query_dim=8, llm_hidden=16, region_parts=(3,), raw_parts=(1,))


def test_object_projector_gives_each_region_part_its_say_at_word_scale():
    torch.manual_seed(0)
    projector = ObjectProjector(query_dim=8, llm_hidden=32, region_parts=(64, 3), raw_parts=(1,), output_rms=0.05)
    queries, boxes, scores = torch.randn(4, 10, 8), torch.rand(4, 10, 4), torch.rand(4, 10)
    features, rgb = torch.randn(4, 10, 64) * 3, torch.randn(4, 10, 3)
    out = projector(queries, boxes, scores, torch.cat([features, rgb], -1))
    assert torch.allclose(out.pow(2).mean(-1).sqrt(), torch.full((4, 10), 0.05), rtol=1e-3)  # a word's scale
    # 3 colour numbers move the first hidden layer about as much as 64 features (a shared Linear: ~sqrt(3/64))
    wide, narrow = (projector.inputs[i](x).std().item() for i, x in ((1, features), (2, rgb)))
    assert 0.3 < narrow / wide < 3
    # normalised parts are scale-free; the raw RGB part keeps its brightness
    same = projector(queries, boxes, scores, torch.cat([features * 2, rgb], -1))
    brighter = projector(queries, boxes, scores, torch.cat([features, rgb * 2], -1))
    assert torch.allclose(same, out, atol=1e-5) and not torch.allclose(brighter, out, atol=1e-3)


def test_pointer_head_is_a_scaled_cosine_similarity():
    from adapters.projectors import PointerHead

    head = PointerHead(llm_hidden=8)
    states, objects = torch.randn(3, 8), torch.randn(3, 4, 8)
    logits = head(states, objects)
    q, k = head.query(states), head.key(objects)
    cosine = torch.nn.functional.cosine_similarity(q[:, None], k, dim=-1)
    assert logits.shape == (3, 4) and torch.allclose(logits, 10.0 * cosine, atol=1e-4)
