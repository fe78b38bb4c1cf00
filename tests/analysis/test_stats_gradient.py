"""Exact values for map statistics and the finite-difference image gradient."""

from __future__ import annotations

import pytest
import torch

from convscope.analysis import image_gradient, map_stats


def test_map_stats_exact() -> None:
    a = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])  # (1, 2, 2, 2)
    s = map_stats(a)
    assert (s.min, s.max, s.mean, s.sparsity, s.numel, s.dead_channels) == (0.0, 2.0, 0.25, 7 / 8, 8, 1)
    assert s.std == pytest.approx(((7 * 0.0625 + 3.0625) / 8) ** 0.5)
    with pytest.raises(ValueError, match="NaN"):
        map_stats(torch.tensor([[1.0, float("nan")]]))


def test_image_gradient_of_a_ramp_is_its_slope() -> None:
    c = 3.0
    u = torch.arange(6.0)
    x = (c * u).expand(4, 6).unsqueeze(0).clone()  # (1, 4, 6): x[v, u] = 3u
    gu, gv = image_gradient(x)
    assert gu[0, :, 1:-1].unique().tolist() == [3.0]
    assert gu[0, :, 0].unique().tolist() == [1.5] and gu[0, :, -1].unique().tolist() == [1.5]
    assert gv.abs().max().item() == 0.0
    # a vertical ramp is the transpose
    gu2, gv2 = image_gradient(x[0].t().contiguous())
    assert gu2.abs().max().item() == 0.0 and gv2[0, 1:-1, :].unique().tolist() == [3.0]
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        image_gradient(torch.zeros(1, 1, 2, 2))


def test_block_stats_exact() -> None:
    from convscope.analysis import block_stats

    a = torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]], [[[1.0, 0.0]], [[0.0, 0.0]]]])  # (2, 2, 1, 2)
    z = a - 1.0
    g = torch.full_like(a, 0.5)
    w = torch.tensor([[3.0, 4.0]])
    w_prev = torch.tensor([[3.0, 4.003]])
    s = block_stats(a, z, g, w, torch.tensor([[0.0, 2.0]]), w_prev)
    assert s["a_min"] == 0.0 and s["a_max"] == 2.0 and s["a_mean"] == 3.0 / 8
    assert s["dead_fraction"] == 0.5  # channel 1 is zero everywhere in the batch
    assert (s["z_min"], s["z_max"]) == (-1.0, 1.0)
    assert s["grad_a_norm"] == pytest.approx(0.5 * 8**0.5)
    assert s["weight_norm"] == 5.0 and s["grad_weight_norm"] == 2.0
    assert s["update_ratio"] == pytest.approx(0.003 / 5.0, rel=1e-4)
    assert block_stats(None, None, None, None, None) == {}


def test_block_stats_relu_shortcut_gives_the_same_numbers() -> None:
    from convscope.analysis import block_stats

    torch.manual_seed(0)
    z = torch.randn(4, 3, 5, 5)
    z[:, 1] = -1.0  # a dead channel
    a = torch.relu(z)
    full = block_stats(a, z, None, None, None)
    fast = block_stats(a, z, None, None, None, relu=True)
    assert fast == full and fast["dead_fraction"] == pytest.approx(1 / 3)


def test_flat_is_a_view_in_memory_order_of_any_dense_layout() -> None:
    from convscope.analysis.stats import flat

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    for t in (x, x.contiguous(memory_format=torch.channels_last), x.permute(3, 1, 0, 2), x[:, :, :, 0]):
        f = flat(t)
        assert f.dim() == 1 and f.numel() == t.numel()
        assert torch.equal(f.sort().values, t.reshape(-1).sort().values)  # every element once
        assert f.data_ptr() == t.data_ptr()  # a view: no copy
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(flat(cl), cl.permute(0, 2, 3, 1).reshape(-1))  # channels-last memory order
    gappy = x[:, :, ::2]  # not dense: a flattened copy, the same elements
    assert torch.equal(flat(gappy), gappy.reshape(-1))
