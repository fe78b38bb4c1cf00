"""colormap: the tables match matplotlib's, 0.5 is the diverging centre, MARKER is in no table."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from convscope.render.colormap import CENTER, MARKER, NAMES, apply, lut, mark_constant


def mpl(name: str, x: float) -> np.ndarray:
    return np.rint(np.array(colormaps[name](x)[:3]) * 255).astype(np.uint8)


def test_tables_are_cached_read_only_uint8() -> None:
    for name in NAMES:
        table = lut(name)
        assert table.shape == (256, 3) and table.dtype == np.uint8
        assert lut(name) is table
        assert not table.flags.writeable


def test_diverging_is_rdbu_r_with_a_light_centre() -> None:
    np.testing.assert_array_equal(apply(0.5, "diverging"), mpl("RdBu_r", 0.5))
    np.testing.assert_array_equal(apply(0.5, "diverging"), lut("diverging")[CENTER])
    np.testing.assert_array_equal(apply(0.0, "diverging"), mpl("RdBu_r", 0.0))  # dark blue
    np.testing.assert_array_equal(apply(1.0, "diverging"), mpl("RdBu_r", 1.0))  # dark red
    blue, centre, red = apply([0.0, 0.5, 1.0], "diverging").astype(int)
    assert blue[2] > blue[0] and red[0] > red[2]
    assert centre.min() >= 240  # near-white


def test_sequential_is_viridis_dark_at_zero() -> None:
    np.testing.assert_array_equal(apply(0.0, "sequential"), mpl("viridis", 0.0))
    np.testing.assert_array_equal(apply(1.0, "sequential"), mpl("viridis", 1.0))
    dark, bright = apply([0.0, 1.0], "sequential").astype(int)
    assert dark.sum() < 200 < bright.sum()
    np.testing.assert_array_equal(apply([0.0, 1.0], "gray"), [[0, 0, 0], [255, 255, 255]])


def test_index_rounds_and_clips() -> None:
    table = lut("gray")
    # 0.3 * 255 = 76.5 rounds up; values outside [0, 1] clip to the ends
    np.testing.assert_array_equal(apply([-1.0, 0.3, 2.0], "gray"), table[[0, 77, 255]])
    assert apply(np.zeros((2, 3, 4)), "gray").shape == (2, 3, 4, 3)


def test_marker_is_in_no_table() -> None:
    for name in NAMES:
        assert not (lut(name) == np.array(MARKER)).all(axis=1).any()


def test_mark_constant_draws_a_border_and_a_hatch() -> None:
    cell = np.zeros((16, 16, 3), dtype=np.uint8)
    mark_constant(cell)
    marked = (cell == MARKER).all(axis=2)
    assert marked[0].all() and marked[-1].all() and marked[:, 0].all() and marked[:, 1].all()
    assert marked[8, 8] and marked[8, 9] and not marked[8, 10]  # (x + y) % 8 < 2 inside
    assert not marked[5, 6]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown colormap 'jet'"):
        apply(0.5, "jet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        apply([np.nan], "gray")
