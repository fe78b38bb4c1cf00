"""Snapshot encoding: float16 when no value is lost, float32 otherwise; exact round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convscope.runs.codec import decode, encode


def roundtrip(t: object) -> tuple[str, torch.Tensor]:
    e = encode(t)
    return e.dtype, decode(e.dtype, e.shape, e.scale_exp, e.data)


def test_float16_numbers_round_trip_exactly() -> None:
    # every value is a float16 number: largest, negative, zero, smallest normal and subnormal
    t = torch.tensor([[0.5, -1.25, 0.0, 1024.0], [65504.0, -65504.0, 2.0**-14, 2.0**-24]])
    dtype, back = roundtrip(t)
    assert dtype == "float16"
    assert back.dtype == torch.float32 and back.shape == (2, 4)
    assert torch.equal(back, t)


def test_small_float16_numbers_are_scaled_not_flushed() -> None:
    # gradients ~1e-9 are below float16's range; the power-of-two scale keeps them exactly
    t = torch.tensor([2.0**-30, -3 * 2.0**-32, 0.0, 5 * 2.0**-40])
    enc = encode(t)
    assert enc.dtype == "float16" and enc.scale_exp == 14 + 30
    assert torch.equal(decode(enc.dtype, enc.shape, enc.scale_exp, enc.data), t)


def test_float32_map_matches_an_independent_float16_oracle() -> None:
    torch.manual_seed(0)
    t = torch.randn(1, 16, 32, 32)  # (1, C, H, W)
    enc = encode(t)
    m = float(t.abs().max())
    exp = 14 - math.floor(math.log2(m))
    oracle = (t * 2.0**exp).half().float() / 2.0**exp  # float16 with the same power-of-two scale
    assert enc.dtype == "float16" and enc.scale_exp == exp and enc.shape == (1, 16, 32, 32)
    assert torch.equal(decode(enc.dtype, enc.shape, enc.scale_exp, enc.data), oracle)


def test_out_of_float16_range_is_stored_float32_exactly() -> None:
    t = torch.tensor([1e6, 0.1, -2.5])
    dtype, back = roundtrip(t)
    assert dtype == "float32"
    assert torch.equal(back, t)
    assert back[0].item() == 1e6


def test_nan_and_inf_are_kept_as_they_are() -> None:
    t = torch.tensor([math.nan, math.inf, -math.inf, 1.5])
    dtype, back = roundtrip(t)
    assert dtype == "float32"
    assert math.isnan(back[0].item())
    assert back[1:].tolist() == [math.inf, -math.inf, 1.5]


def test_a_value_float16_would_flush_to_zero_forces_float32() -> None:
    t = torch.tensor([1000.0, 1e-12, 0.0])  # 1e-12 * 2**5 is below float16's smallest subnormal
    dtype, back = roundtrip(t)
    assert dtype == "float32"
    assert torch.equal(back, t)
    t = torch.tensor([1000.0, -1e-12, -0.0])  # a negative one flushes to -0 (its sign bit set): caught too
    dtype, back = roundtrip(t)
    assert dtype == "float32" and torch.equal(back, t)
    dtype, back = roundtrip(torch.tensor([-0.0, 1.5, 0.0]))  # ±0 are zeros, not flushed values
    assert dtype == "float16" and back.tolist() == [0.0, 1.5, 0.0] and math.copysign(1, back[0].item()) == -1


def test_data_that_does_not_shrink_is_stored_not_compressed() -> None:
    """Filters barely compress: their stream holds zlib's stored blocks (fast), still a zlib stream
    that decodes alike; a ReLU map's zeros do compress."""
    torch.manual_seed(0)
    w = torch.randn(256, 128, 3, 3) * 0.02
    enc = encode(w)
    assert len(enc.data) > w.numel() * 2  # float16 bytes and a little framing: not compressed
    assert torch.equal(decode(enc.dtype, enc.shape, enc.scale_exp, enc.data), (w * 2.0**enc.scale_exp).half().float() / 2.0**enc.scale_exp)
    a = torch.relu(torch.randn(1, 64, 64, 64) - 1.0)  # ~84% zeros
    enc = encode(a)
    assert len(enc.data) < 0.6 * a.numel() * 2
    # one example's maps of a small net (32 KB of float16): sampled too, in small pieces
    z = torch.randn(16, 32, 32)
    enc = encode(z)
    assert len(enc.data) > z.numel() * 2  # signed: stored
    e = enc.scale_exp
    assert torch.equal(decode(enc.dtype, enc.shape, e, enc.data), (z * 2.0**e).half().float() / 2.0**e)
    enc = encode(torch.relu(z))
    assert len(enc.data) < 0.7 * z.numel() * 2  # half of it zeros: compressed


def test_other_inputs() -> None:
    assert roundtrip(torch.tensor([[1, -2], [3, 40000]]))[1].tolist() == [
        [1.0, -2.0],
        [3.0, 40000.0],
    ]
    assert roundtrip(torch.tensor([True, False]))[1].tolist() == [1.0, 0.0]
    assert roundtrip(np.array([0.25, -8.0], dtype=np.float64))[1].tolist() == [0.25, -8.0]
    assert roundtrip(torch.tensor([0.5], dtype=torch.bfloat16))[1].tolist() == [0.5]
    big = torch.tensor([1e20, 1.0], dtype=torch.float64)  # fits float32, not float16
    dtype, back = roundtrip(big)
    assert dtype == "float32" and torch.equal(back, torch.tensor([1e20, 1.0]))
    dtype, back = roundtrip(torch.zeros(0, 3))
    assert back.shape == (0, 3)
    g = torch.ones(2, 3, requires_grad=True) * 2  # non-leaf with grad: detached, not an error
    assert roundtrip(g[:, 1:].t())[1].tolist() == [[2.0, 2.0], [2.0, 2.0]]  # non-contiguous view


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="does not fit float32"):
        encode(torch.tensor([1e300, 1.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="real"):
        encode(torch.tensor([1 + 2j]))
    with pytest.raises(TypeError, match=r"torch.Tensor or numpy array, got list"):
        encode([1.0, 2.0])
    with pytest.raises(ValueError, match="unknown snapshot dtype"):
        decode("int8", (1,), 0, b"")


@settings(max_examples=150, deadline=None)
@given(
    arrays(
        np.float32,
        st.integers(0, 40),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
    )
)
def test_no_value_is_lost(a: np.ndarray) -> None:
    """Any float32 input: NaN/Inf and zero vs non-zero survive; float32 storage is exact;
    float16 storage is within float16's rounding of the value."""
    enc = encode(a)
    back = decode(enc.dtype, enc.shape, enc.scale_exp, enc.data).numpy()
    assert back.shape == a.shape
    assert np.array_equal(np.isnan(back), np.isnan(a))
    assert np.array_equal(back == 0, a == 0)
    if enc.dtype == "float32":
        assert np.array_equal(back, a, equal_nan=True)
    else:
        assert np.isfinite(a).all() and np.abs(a).max(initial=0) <= 65504
        scale = np.float32(2.0**enc.scale_exp)
        assert np.array_equal(back, (a * scale).astype(np.float16).astype(np.float32) / scale)
