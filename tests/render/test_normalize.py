"""normalize: exact outputs of every mode on hand-made maps, and the errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convscope.render.normalize import as_array, normalize

# two signed 2x2 maps: m = max|v| is 2 for the first, 0.5 for the second
SIGNED = np.array([[[-2.0, 0.0], [1.0, 2.0]], [[0.5, -0.25], [0.0, 0.0]]])
# two unsigned 2x2 maps: the second is constant
UNSIGNED = np.array([[[0.0, 1.0], [2.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]]])


def test_signed_per_map() -> None:
    n = normalize(SIGNED, mode="map", signed=True)
    np.testing.assert_array_equal(n.values[0], [[0.0, 0.5], [0.75, 1.0]])
    np.testing.assert_array_equal(n.values[1], [[1.0, 0.25], [0.5, 0.5]])
    np.testing.assert_array_equal(n.vmin, [-2.0, -0.5])
    np.testing.assert_array_equal(n.vmax, [2.0, 0.5])
    np.testing.assert_array_equal(n.constant, [False, False])
    np.testing.assert_array_equal(n.clipped, [False, False])
    assert n.signed


def test_signed_per_layer_shares_one_scale() -> None:
    n = normalize(SIGNED, mode="layer", signed=True)
    np.testing.assert_array_equal(n.values[0], [[0.0, 0.5], [0.75, 1.0]])
    np.testing.assert_array_equal(n.values[1], [[0.625, 0.4375], [0.5, 0.5]])
    np.testing.assert_array_equal(n.vmin, [-2.0, -2.0])
    np.testing.assert_array_equal(n.vmax, [2.0, 2.0])


def test_signed_global_uses_the_given_scale_and_reports_clipping() -> None:
    n = normalize(SIGNED, mode="global", signed=True, scale=4.0)
    np.testing.assert_array_equal(n.values[0], [[0.25, 0.5], [0.625, 0.75]])
    np.testing.assert_array_equal(n.values[1], [[0.5625, 0.46875], [0.5, 0.5]])
    np.testing.assert_array_equal(n.clipped, [False, False])
    np.testing.assert_array_equal(n.vmax, [4.0, 4.0])

    n = normalize(SIGNED, mode="global", signed=True, scale=1.0)
    np.testing.assert_array_equal(n.values[0], [[0.0, 0.5], [1.0, 1.0]])
    np.testing.assert_array_equal(n.clipped, [True, False])


def test_unsigned_per_map_and_layer() -> None:
    n = normalize(UNSIGNED, mode="map", signed=False)
    np.testing.assert_array_equal(n.values[0], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(n.values[1], np.ones((2, 2)))  # constant 3, its own max
    np.testing.assert_array_equal(n.constant, [False, True])
    np.testing.assert_array_equal(n.vmin, [0.0, 0.0])
    np.testing.assert_array_equal(n.vmax, [4.0, 3.0])

    n = normalize(UNSIGNED, mode="layer", signed=False)
    np.testing.assert_array_equal(n.values[1], np.full((2, 2), 0.75))
    np.testing.assert_array_equal(n.vmax, [4.0, 4.0])

    n = normalize(UNSIGNED, mode="global", signed=False, scale=8.0)
    np.testing.assert_array_equal(n.values[0], [[0.0, 0.125], [0.25, 0.5]])


def test_all_zero_maps_do_not_divide_by_zero() -> None:
    zeros = np.zeros((3, 4, 4))
    n = normalize(zeros, mode="map", signed=False)
    np.testing.assert_array_equal(n.values, zeros)
    np.testing.assert_array_equal(n.constant, [True, True, True])
    n = normalize(zeros, mode="layer", signed=True)
    np.testing.assert_array_equal(n.values, np.full((3, 4, 4), 0.5))
    np.testing.assert_array_equal(n.vmax, [0.0, 0.0, 0.0])


def test_single_values_are_not_called_constant() -> None:
    n = normalize(np.array([[1.0], [2.0]]), signed=False)
    np.testing.assert_array_equal(n.constant, [False, False])


def test_torch_tensors_that_require_grad_give_the_numpy_result() -> None:
    t = torch.tensor(SIGNED, dtype=torch.float32, requires_grad=True)
    np.testing.assert_array_equal(
        normalize(t, signed=True).values, normalize(SIGNED, signed=True).values
    )
    half = torch.tensor(UNSIGNED, dtype=torch.bfloat16)
    np.testing.assert_array_equal(
        normalize(half, signed=False).values, normalize(UNSIGNED, signed=False).values
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "global", "signed": True}, "needs a finite scale > 0"),
        ({"mode": "global", "signed": True, "scale": 0.0}, "needs a finite scale > 0"),
        ({"mode": "map", "signed": True, "scale": 1.0}, "scale is used only with mode='global'"),
        ({"mode": "pixel", "signed": True}, "mode must be one of"),
        ({"signed": False}, "signed=False but the values go down to -2"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize(SIGNED, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    x = SIGNED.copy()
    x[1, 0, 0] = bad
    with pytest.raises(ValueError, match=r"normalize input has (1 NaN|0 NaN and 1 infinite)"):
        normalize(x, signed=True)


def test_empty_and_non_numeric_input_is_refused() -> None:
    with pytest.raises(ValueError, match="N maps shaped"):
        normalize(np.zeros((0, 3, 3)), signed=False)
    with pytest.raises(ValueError, match="expected real numbers"):
        as_array(np.array(["a"]), what="x")
    with pytest.raises(ValueError, match="complex"):
        as_array(torch.zeros(2, dtype=torch.complex64), what="x")


@given(
    arrays(np.float64, (3, 4, 5), elements=st.floats(-1e6, 1e6)), st.sampled_from(["map", "layer"])
)
def test_signed_values_span_the_range_and_keep_zero_at_the_centre(x: np.ndarray, mode: str) -> None:
    n = normalize(x, mode=mode, signed=True)  # type: ignore[arg-type]
    assert n.values.min() >= 0.0 and n.values.max() <= 1.0
    np.testing.assert_array_equal(n.values[x == 0], 0.5)
    big = np.abs(x).reshape(3, -1).max(axis=1)
    if mode == "map":  # each map with some non-zero value reaches an end exactly
        ends = np.abs(n.values.reshape(3, -1) - 0.5).max(axis=1)
        np.testing.assert_array_equal(ends[big > 0], 0.5)


def test_round_off_around_one_value_is_still_constant() -> None:
    maps = np.array([[1.0, 1.0 + 1e-9, 1.0 - 1e-9], [1e-9, -1e-9, 0.0], [1.0, 1.0001, 1.0]])
    n = normalize(maps, signed=True)
    np.testing.assert_array_equal(n.constant, [True, False, False])  # tiny but real spread is live
