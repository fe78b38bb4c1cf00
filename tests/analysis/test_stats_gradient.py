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


def test_chunked_norm_equals_float64_without_a_copy_and_keeps_float64_range() -> None:
    """chunked_norm: ‖t‖ in float64 and ‖t − u‖ a chunk at a time equal a float64 computation
    (a length that is not a multiple of the chunk, channels-last views alike); values whose squares
    underflow (1e-30) or overflow (1e20) in float32 keep their float64 norm; the inputs are left as
    they were; an empty tensor has norm 0; gradient_health.norm is the float64 one."""
    from convscope.analysis.gradient_health import norm
    from convscope.analysis.stats import CHUNK, chunked_norm

    torch.manual_seed(5)
    t = torch.randn(2 * CHUNK + 7)
    u = t + 1e-3 * torch.randn_like(t)
    t0, u0 = t.clone(), u.clone()
    assert chunked_norm(t, dtype=torch.float64).item() == pytest.approx(t.double().norm().item(), rel=1e-12)
    assert chunked_norm(t, u).item() == pytest.approx((t.double() - u.double()).norm().item(), rel=1e-5)
    assert torch.equal(t, t0) and torch.equal(u, u0)
    w = torch.randn(70, 64, 8, 8).contiguous(memory_format=torch.channels_last)
    p = (w + 1e-2).contiguous(memory_format=torch.channels_last)
    want = (w.double() - p.double()).norm().item()  # float32 sums of 286,720 equal squares: torch's
    assert abs(chunked_norm(w, p).item() - want) <= abs(torch.linalg.vector_norm(w - p).item() - want)  # own is off 2e-4
    tiny, huge = torch.full((CHUNK + 1,), 1e-30), torch.full((3,), 1e20)
    assert torch.linalg.vector_norm(tiny).item() == 0.0  # float32 squares underflow
    assert norm(tiny) == pytest.approx(float(tiny[0]) * (CHUNK + 1) ** 0.5, rel=1e-9)  # (1e-30 as float32)
    assert norm(huge) == pytest.approx(float(huge[0]) * 3**0.5, rel=1e-12)
    assert chunked_norm(torch.zeros(0), dtype=torch.float64).item() == 0.0
