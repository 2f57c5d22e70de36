"""Shared building blocks: the frozen batch norm folded into its convolution computes the official conv-then-norm."""
from __future__ import annotations

import pytest
import torch

from glee_core.modeling.layers import Conv2dNorm, FrozenBatchNorm2d, set_norm_folding


def _conv_with_frozen_norm(bias: bool) -> Conv2dNorm:
    torch.manual_seed(0)
    norm = FrozenBatchNorm2d(6)
    for buffer, low, high in ((norm.weight, -2, 2), (norm.bias, -1, 1), (norm.running_mean, -1, 1),
                              (norm.running_var, 0.1, 3)):
        buffer.uniform_(low, high)
    return Conv2dNorm(4, 6, 3, padding=1, bias=bias, norm=norm, activation=torch.relu)


@pytest.mark.parametrize("bias", [False, True])
def test_folded_frozen_norm_equals_conv_then_norm(bias):
    conv = _conv_with_frozen_norm(bias)
    x = torch.randn(2, 4, 9, 7, requires_grad=True)
    folded = conv(x)
    (grad_x_folded, grad_w_folded) = torch.autograd.grad(folded.square().sum(), (x, conv.weight))
    set_norm_folding(conv, False)
    official = conv(x)
    grad_x, grad_w = torch.autograd.grad(official.square().sum(), (x, conv.weight))
    # hand-written reference of the official two passes
    scale = conv.norm.weight / (conv.norm.running_var + conv.norm.eps).sqrt()
    by_hand = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    by_hand = torch.relu((by_hand - conv.norm.running_mean[:, None, None]) * scale[:, None, None]
                         + conv.norm.bias[:, None, None])
    torch.testing.assert_close(official, by_hand)
    torch.testing.assert_close(folded, official, rtol=1e-5, atol=1e-5)
    assert bool((folded > 0).any()) and bool((folded == 0).any()), "the check must see both ReLU branches"
    torch.testing.assert_close(grad_x_folded, grad_x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_w_folded, grad_w, rtol=1e-4, atol=1e-4)


def test_folding_leaves_other_norms_alone():
    conv = Conv2dNorm(4, 32, 1, norm=torch.nn.GroupNorm(8, 32))
    x = torch.randn(1, 4, 5, 5)
    out = conv(x)
    set_norm_folding(conv, False)
    torch.testing.assert_close(conv(x), out, rtol=0, atol=0)
