"""grid and legend: colours, layout, crisp scaling, constant-map markers and errors, pixel by pixel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from convscope.render import Picture, grid, legend
from convscope.render.colormap import CENTER, MARKER, apply, lut
from convscope.render.grid import CELL, DENSE_CELL, GAP, LABEL_PX, MARGIN

SEQ0 = lut("sequential")[0]
DIV = lut("diverging")


def cell(pic: Picture, i: int) -> np.ndarray:
    b = pic.cells[i]
    return pic.array[b.y : b.y + b.h, b.x : b.x + b.w]


def centre(pic: Picture, i: int) -> np.ndarray:
    x, y = pic.cells[i].center
    return pic.array[y, x]


def marker_pixels(pixels: np.ndarray) -> int:
    return int((pixels == MARKER).all(axis=-1).sum())


def test_cells_sit_in_a_predictable_grid() -> None:
    # 5 unsigned 4x4 maps, one scale: map i is 0 except its centre pixel (2, 2) = i + 1
    maps = np.zeros((5, 4, 4))
    maps[:, 2, 2] = np.arange(1, 6)
    pic = grid(maps, norm="layer", cols=2, labels=False)
    side = 48  # 4 px maps scaled by 12
    step_y = side + GAP  # no label row
    expected = [
        (MARGIN + c * (side + GAP), MARGIN + r * step_y)
        for r, c in [divmod(i, 2) for i in range(5)]
    ]
    assert [(b.x, b.y, b.w, b.h) for b in pic.cells] == [(x, y, side, side) for x, y in expected]
    for i in range(5):
        np.testing.assert_array_equal(centre(pic, i), apply((i + 1) / 5, "sequential"))
        corner = pic.array[pic.cells[i].y, pic.cells[i].x]  # map pixel (0, 0) = 0
        np.testing.assert_array_equal(corner, SEQ0)
    assert pic.width == 2 * MARGIN + 2 * side + GAP
    assert pic.height == 2 * MARGIN + 3 * side + 2 * GAP


def test_labels_add_a_row_of_text_under_each_cell() -> None:
    maps = np.random.default_rng(0).random((3, 4, 4))
    bare, labelled = grid(maps, labels=False), grid(maps)
    assert labelled.cells[0] == bare.cells[0]
    b = labelled.cells[1]
    under = labelled.array[b.y + b.h + 1 : b.y + b.h + LABEL_PX + 4, b.x : b.x + b.w]
    assert (under < 128).any()  # dark text pixels
    text_h = LABEL_PX + 4
    assert labelled.height > bare.height + text_h  # label row plus a note line
    named = grid(maps, labels=["red", "green", "blue"])
    assert named.cells[0].y == labelled.cells[0].y
    with pytest.raises(ValueError, match="list of 3 strings"):
        grid(maps, labels=["just one"])


def test_small_maps_scale_up_crisply_by_an_integer_factor() -> None:
    maps = np.random.default_rng(1).random((2, 3, 5))  # 3x5 -> factor ceil(48/5) = 10
    pic = grid(maps, labels=False)
    n = maps / maps.reshape(2, -1).max(axis=1)[:, None, None]
    for i in range(2):
        expected = apply(n[i], "sequential").repeat(10, axis=0).repeat(10, axis=1)
        np.testing.assert_array_equal(cell(pic, i), expected)
    assert pic.cells[0].w == 50 and pic.cells[0].h == 30
    assert grid(maps, cell=20, labels=False).cells[0].w == 20  # factor 20 // 5 = 4
    big = grid(np.random.default_rng(2).random((1, 100, 100)), labels=False)
    assert big.cells[0].w == 100  # large maps stay 1:1


def test_a_cell_smaller_than_the_map_box_averages_values() -> None:
    m = np.array(
        [[[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 4.0, 4.0], [2.0, 2.0, 4.0, 4.0]]]
    )
    pic = grid(m, cell=2, labels=False)
    np.testing.assert_array_equal(cell(pic, 0), apply([[0.0, 1.0], [0.5, 1.0]], "sequential"))


def test_signed_maps_centre_zero_on_the_diverging_centre_colour() -> None:
    z = np.array([[[-2.0, 0.0], [2.0, 1.0]]])  # 2x2 -> blocks of 24
    pic = grid(z, labels=False)  # signed chosen automatically
    c = cell(pic, 0)
    np.testing.assert_array_equal(c[0, 0], DIV[0])  # -max: blue end
    np.testing.assert_array_equal(c[0, 24], DIV[CENTER])  # 0: centre colour
    np.testing.assert_array_equal(c[24, 0], DIV[255])  # +max: red end
    np.testing.assert_array_equal(c[24, 24], apply(0.75, "diverging"))
    assert (c[:24, 24:] == DIV[CENTER]).all()  # the whole block is uniform


def test_unsigned_maps_draw_zero_as_the_first_sequential_colour() -> None:
    a = np.array([[[0.0, 1.0], [3.0, 4.0]]])
    c = cell(grid(a, labels=False), 0)
    np.testing.assert_array_equal(c[0, 0], SEQ0)
    np.testing.assert_array_equal(c[24, 24], lut("sequential")[255])
    forced = cell(grid(a, signed=True, labels=False), 0)  # the same data drawn signed
    np.testing.assert_array_equal(forced[0, 0], DIV[CENTER])


@pytest.mark.parametrize("signed", [False, True])
def test_a_constant_map_is_marked_and_a_live_one_is_not(signed: bool) -> None:
    a = np.abs(np.random.default_rng(3).normal(size=(3, 6, 6)))
    a[1] = 0.0  # a dead filter's activation map
    pic = grid(a, signed=signed)
    live, dead = cell(pic, 0), cell(pic, 1)
    assert marker_pixels(live) == 0 and marker_pixels(cell(pic, 2)) == 0
    assert marker_pixels(dead) > dead.shape[0] * dead.shape[1] // 5
    assert (dead[0] == MARKER).all()  # border
    flat = ~(dead == MARKER).all(axis=-1)
    zero = DIV[CENTER] if signed else SEQ0
    assert (dead[flat] == zero).all()  # under the hatch: exactly the colour of 0


def test_global_norm_compares_across_calls() -> None:
    a = np.array([[[1.0, 2.0]]])
    c = cell(grid(a, norm="global", scale=8.0, labels=False), 0)
    np.testing.assert_array_equal(c[0, 0], apply(0.125, "sequential"))
    np.testing.assert_array_equal(c[0, 24], apply(0.25, "sequential"))


def test_input_shapes() -> None:
    x = np.random.default_rng(4).normal(size=(2, 3, 4, 4))
    assert len(grid(x).cells) == 3
    np.testing.assert_array_equal(grid(x, sample=1).array, grid(x[1]).array)
    np.testing.assert_array_equal(grid(x[1, 2]).array, grid(x[1, 2:3]).array)  # (H, W) = one map
    t = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    np.testing.assert_array_equal(grid(t, sample=1).array, grid(x[1].astype(np.float32)).array)

    v = np.array([-1.0, 0.0, 0.5, 1.0])  # dense: one cell per unit, one scale for the vector
    pic = grid(v)
    assert [b.w for b in pic.cells] == [DENSE_CELL] * 4
    for i, value in enumerate(v):
        np.testing.assert_array_equal(centre(pic, i), apply(0.5 + 0.5 * value, "diverging"))
    batch = np.stack([v * 0, v])
    np.testing.assert_array_equal(grid(batch, dense=True, sample=1).array, pic.array)
    pooled = v[:, None, None]  # (C, 1, 1), as after global pooling
    np.testing.assert_array_equal(grid(pooled).array, pic.array)
    assert len(grid(np.ones((1, 40))).cells) == 1  # 2-D without dense=True: one (H, W) map


def test_dense_zero_vector_is_marked() -> None:
    pic = grid(np.zeros(5))
    assert all(marker_pixels(cell(pic, i)) > 0 for i in range(5))
    assert marker_pixels(cell(grid(np.arange(5.0)), 0)) == 0


@pytest.mark.parametrize("shape", [(2, 2, 2, 2, 2), ()])
def test_wrong_dims_say_which_shapes_are_accepted(shape: tuple[int, ...]) -> None:
    with pytest.raises(
        ValueError, match=r"grid accepts \(B, C, H, W\), \(C, H, W\), \(H, W\), \(F,\)"
    ):
        grid(np.zeros(shape))


def test_non_finite_and_bad_arguments_raise() -> None:
    x = np.zeros((1, 3, 4, 4))
    x[0, 1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="grid input has 1 NaN"):
        grid(x)
    x[0, 1, 2, 2] = np.inf
    with pytest.raises(ValueError, match="1 infinite"):
        grid(x)
    with pytest.raises(ValueError, match="sample=2 is out of range for a batch of 1"):
        grid(np.zeros((1, 3, 4, 4)), sample=2)
    with pytest.raises(ValueError, match="cols must be >= 1"):
        grid(np.zeros((3, 4, 4)), cols=0)
    with pytest.raises(ValueError, match="signed=False"):
        grid(-np.ones((3, 4, 4)), signed=False)


def test_title_is_drawn_on_top() -> None:
    maps = np.random.default_rng(5).random((2, 4, 4))
    pic = grid(maps, title="conv1 a", labels=False)
    assert pic.cells[0].y > MARGIN + 10
    assert (pic.array[MARGIN : pic.cells[0].y - 2] < 128).any()


def test_legend_colours_match_grid_colours() -> None:
    pic = legend(-2.0, 2.0, signed=True, width=255)
    b = pic.cells[0]
    row = pic.array[b.y + b.h // 2, b.x : b.x + b.w]
    np.testing.assert_array_equal(row[0], DIV[0])
    np.testing.assert_array_equal(row[127], DIV[CENTER])  # the value 0
    np.testing.assert_array_equal(row[-1], DIV[255])
    below = pic.array[b.y + b.h + 4 :, :]
    assert (below < 128).any()  # tick labels

    pic = legend(0.0, 3.0, signed=False, width=64)
    b = pic.cells[0]
    np.testing.assert_array_equal(pic.array[b.y, b.x], SEQ0)
    np.testing.assert_array_equal(pic.array[b.y, b.x + b.w - 1], lut("sequential")[255])
    assert b.w == 64 and CELL == 48


@pytest.mark.parametrize(
    ("args", "signed", "message"),
    [
        ((1.0, 1.0), True, "finite vmin < vmax"),
        ((0.0, float("nan")), False, "finite"),
        ((-1.0, 1.0), False, "unsigned"),
    ],
)
def test_legend_errors(args: tuple[float, float], signed: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        legend(*args, signed=signed)


def test_input_is_left_unchanged_and_bad_norm_is_refused_for_every_shape() -> None:
    x = np.random.default_rng(6).normal(size=(2, 3, 4, 4))
    before = x.copy()
    grid(x)
    grid(x[0, :, 0, 0])
    np.testing.assert_array_equal(x, before)
    for shape in [(3, 4, 4), (5,)]:
        with pytest.raises(ValueError, match="mode must be one of"):
            grid(np.ones(shape), norm="pixel")  # type: ignore[arg-type]


def test_characters_the_font_lacks_are_spelled_in_ascii() -> None:
    from convscope.render.grid import _plain

    assert _plain("∂x/∂u · dL/dW ± 1 …") == "dx/du · dL/dW ± 1 …"
    assert _plain("3×3 → −1 ≥ 0 ✓") == "3x3 -> -1 >= 0 ?"
    a = np.random.default_rng(7).random((2, 4, 4))
    np.testing.assert_array_equal(grid(a, title="∂x/∂u").array, grid(a, title="dx/du").array)


def test_the_constant_note_names_cells_by_their_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller that shows a subset or a reordering labels each cell with its own index: the note
    under the grid must name a constant map or filter by that label, not by its position (an
    inspect report said "14, 15" under filters labelled 2 and 15)."""
    import importlib

    g = importlib.import_module("convscope.render.grid")  # (convscope.render.grid is the function)

    seen: list[list[str]] = []
    real = g._sheet

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(list(kwargs["notes"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(g, "_sheet", spy)
    a = np.abs(np.random.default_rng(5).normal(size=(4, 5, 5)))
    a[1] = 0.0
    a[3] = 2.5
    grid(a, labels=["7", "2", "9", "15"])
    assert seen[-1][1] == "hatched = constant map (2): 2, 15"
    grid(a)
    assert seen[-1][1] == "hatched = constant map (2): 1, 3"  # default labels: the positions
    w = np.random.default_rng(6).normal(size=(5, 4, 3, 3))
    w[0] = 0.0
    w[4] = 0.0
    g.filters(w, labels=["11", "3", "8", "1", "0"], max_out=3)  # filter 4 ("0") is not drawn
    assert seen[-1][1] == "hatched = constant filter (2): 11, 0"
