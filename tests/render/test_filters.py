"""filters: colour first-layer pictures, rows of deep slices, dense heat matrices, exact pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.render import Picture, filters
from convscope.render.colormap import CENTER, MARKER, apply, lut
from convscope.render.grid import FILTER_CELL

DIV = lut("diverging")
GREY = np.array([128, 128, 128], dtype=np.uint8)


def cell(pic: Picture, i: int) -> np.ndarray:
    b = pic.cells[i]
    return pic.array[b.y : b.y + b.h, b.x : b.x + b.w]


def blocks(c: np.ndarray, k: int) -> np.ndarray:
    """The k x k kernel pixels of a cell, asserting each is a uniform block."""
    f = c.shape[0] // k
    assert c.shape[:2] == (k * f, k * f)
    tiles = c.reshape(k, f, k, f, 3)
    assert (tiles == tiles[:, :1, :, :1]).all(), "a kernel pixel is not a uniform block"
    return tiles[:, 0, :, 0]


def test_red_only_filter_is_red_where_positive_and_grey_where_zero() -> None:
    w = torch.zeros(2, 3, 3, 3)
    w[0, 0, 1, 1] = 1.0  # +1 in the red channel, centre pixel
    w[1] = torch.randn(3, 3, 3)
    pic = filters(w, labels=False)
    k0 = blocks(cell(pic, 0), 3)
    np.testing.assert_array_equal(k0[1, 1], [255, 128, 128])  # red-ish
    np.testing.assert_array_equal(k0[0, 0], GREY)
    assert (k0[np.arange(3) != 1][:, :] == GREY).all()


def test_colour_filters_are_normalised_per_filter_around_zero() -> None:
    w = np.zeros((2, 3, 1, 2))
    w[0, :, 0, 0] = [2.0, -2.0, 1.0]  # m = 2
    w[1, :, 0, 1] = [0.0, 0.5, -0.25]  # m = 0.5
    pic = filters(w, labels=False)  # 1x2 kernels -> factor 24
    k = cell(pic, 0)
    np.testing.assert_array_equal(k[0, 0], [255, 0, 191])  # 0.5 +- 0.5 * v / m, * 255, rounded
    np.testing.assert_array_equal(k[0, 24], GREY)
    np.testing.assert_array_equal(cell(pic, 1)[0, 24], [128, 255, 64])
    layer = filters(w, norm="layer", labels=False)
    np.testing.assert_array_equal(cell(layer, 1)[0, 24], [128, 159, 112])  # m = 2 for both


@pytest.mark.parametrize(("k", "factor"), [(1, 48), (3, 16), (5, 10), (7, 7), (11, 5)])
def test_any_kernel_size_scales_crisply(k: int, factor: int) -> None:
    w = np.random.default_rng(k).normal(size=(4, 3, k, k))
    pic = filters(w, labels=False)
    for i in range(4):
        got = blocks(cell(pic, i), k)
        m = np.abs(w[i]).max()
        expected = np.rint((0.5 + 0.5 * w[i] / m) * 255).astype(np.uint8).transpose(1, 2, 0)
        np.testing.assert_array_equal(got, expected)
    assert pic.cells[0].w == k * factor


def test_deep_filters_one_row_per_filter_one_cell_per_input() -> None:
    w = np.random.default_rng(0).normal(size=(3, 4, 3, 3))
    w[1] = 0.0  # a dead filter
    pic = filters(w)
    assert len(pic.cells) == 12
    first, second = pic.cells[0], pic.cells[4]
    assert [c.y for c in pic.cells[:4]] == [first.y] * 4 and second.y > first.y  # row-major
    assert [c.x for c in pic.cells[4:8]] == [c.x for c in pic.cells[:4]]
    for o in (0, 2):
        m = np.abs(w[o]).max()  # per filter, over all its inputs
        for i in range(4):
            got = blocks(cell(pic, o * 4 + i), 3)
            np.testing.assert_array_equal(got, apply(0.5 + 0.5 * w[o, i] / m, "diverging"))
            assert not (cell(pic, o * 4 + i) == MARKER).all(axis=-1).any()
    for i in range(4):  # every slice of the dead filter is marked, over the colour of 0
        dead = cell(pic, 4 + i)
        marked = (dead == MARKER).all(axis=-1)
        assert marked.sum() > 50
        assert (dead[~marked] == DIV[CENTER]).all()
    assert first.w == 3 * (-(-FILTER_CELL // 3))


def test_deep_filters_are_cut_at_max_in_and_max_out() -> None:
    w = np.random.default_rng(1).normal(size=(5, 20, 3, 3))
    full = filters(w)
    assert len(full.cells) == 5 * 16
    cut = filters(w, max_in=4, max_out=2)
    assert len(cut.cells) == 8
    m = np.abs(w[1]).max()  # the scale still comes from the whole filter
    np.testing.assert_array_equal(
        blocks(cell(cut, 4 + 3), 3), apply(0.5 + 0.5 * w[1, 3] / m, "diverging")
    )
    assert cut.height < full.height


def test_weight_gradients_use_the_same_layout() -> None:
    conv = torch.nn.Conv2d(2, 3, 3)
    conv(torch.randn(1, 2, 5, 5)).square().sum().backward()
    assert conv.weight.grad is not None
    a, b = filters(conv.weight), filters(conv.weight.grad)
    assert a.cells == b.cells


def test_dense_weights_are_one_heat_matrix() -> None:
    # 2x3 -> factor max(256 // 3, 48 // 2) capped at 32
    w = np.array([[1.0, -1.0, 0.0], [0.5, 0.0, 0.0]])
    pic = filters(w)
    assert len(pic.cells) == 1 and (pic.cells[0].w, pic.cells[0].h) == (96, 64)
    got = blocks(cell(pic, 0)[:, :64], 2)  # the left 2x2 entries
    np.testing.assert_array_equal(got, apply(0.5 + 0.5 * w[:, :2], "diverging"))
    zero = filters(np.zeros((4, 5)))
    assert (cell(zero, 0) == MARKER).all(axis=-1).any()
    assert not (cell(pic, 0) == MARKER).all(axis=-1).any()


def test_bad_weights() -> None:
    with pytest.raises(
        ValueError, match=r"filters accepts conv weights \(C_out, C_in, kH, kW\) or dense"
    ):
        filters(np.zeros((3, 3, 3)))
    w = np.zeros((2, 3, 3, 3))
    w[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="filters input has 0 NaN and 1 infinite"):
        filters(w)
    with pytest.raises(ValueError, match="max_in and max_out must be >= 1"):
        filters(np.zeros((2, 4, 3, 3)), max_in=0)


def test_filter_labels_name_all_filters_even_when_cut() -> None:
    w = np.random.default_rng(2).normal(size=(4, 5, 3, 3))
    names = ["edge", "blob", "dot", "line"]
    assert len(filters(w, labels=names, max_out=2).cells) == 2 * 5
    with pytest.raises(ValueError, match="list of 4 strings"):
        filters(w, labels=names[:2], max_out=2)
