"""grid/filters words and sizes users read: a note never runs past the picture's edge (it wraps),
"max abs value" instead of a "|v|" whose bars merge with the v, and a very wide dense matrix (an
fc layer's 10x320 weights) drawn with rows thick enough to tell apart, its notes saying so."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from convscope.render import filters, grid
from convscope.render.colormap import apply
from convscope.render.grid import MARGIN, NOTE_W, TITLE_PX
from convscope.render.normalize import normalize

g = importlib.import_module("convscope.render.grid")  # (convscope.render.grid is the function)
BG = np.array([255, 255, 255], dtype=np.uint8)


@pytest.fixture()
def notes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The note lines each picture was drawn with (after wrapping), newest picture last."""
    seen: list[list[str]] = []
    sheet, wrap = g._sheet, g._wrap

    def spy_sheet(*args: Any, **kwargs: Any) -> Any:
        seen.append([])
        return sheet(*args, **kwargs)

    def spy_wrap(*args: Any) -> list[str]:
        lines: list[str] = wrap(*args)
        seen[-1].extend(lines)
        return lines

    monkeypatch.setattr(g, "_sheet", spy_sheet)
    monkeypatch.setattr(g, "_wrap", spy_wrap)
    return seen


def test_signed_map_note_says_abs_value_and_wraps_inside_the_picture(notes: list[list[str]]) -> None:
    a = np.random.default_rng(0).normal(size=(3, 32, 32))
    pic = grid(a)
    # 3 cells of 64 px + 2 gaps = 200 px of grid < NOTE_W: the note wraps at 320 px
    assert pic.width == 2 * MARGIN + 304  # the widest wrapped line sets it
    assert notes[-1] == ["blue < 0, white = 0, red > 0; each map scaled to its own", "max abs value"]
    # no ink in the right margin: the last character is whole, not at the edge
    assert (pic.array[:, pic.width - MARGIN + 1 :] == BG).all()
    assert (pic.array[:, : MARGIN - 1] == BG).all()


def test_a_wide_grid_keeps_its_note_on_one_line(notes: list[list[str]]) -> None:
    a = np.random.default_rng(1).normal(size=(8, 32, 32))  # 8 cells in one row: 540 px wide
    pic = grid(a)
    assert pic.width == 2 * MARGIN + 8 * 64 + 7 * 4 == 552
    assert notes[-1] == ["blue < 0, white = 0, red > 0; each map scaled to its own max abs value"]
    assert (pic.array[:, pic.width - MARGIN + 1 :] == BG).all()


def test_unsigned_note_unchanged(notes: list[list[str]]) -> None:
    grid(np.random.default_rng(2).random((2, 8, 8)))
    assert notes[-1] == ["dark = 0, bright = max; each map scaled to its own max"]


def test_any_long_note_wraps_to_the_grid_and_stays_inside() -> None:
    maps = np.random.default_rng(3).random((2, 4, 4))
    words = "a very long caption " * 12
    pic = g._sheet(
        np.zeros((2, 48, 48, 3), dtype=np.uint8), cols=2, labels=None, title=None, notes=[words.strip()]
    )
    assert pic.width <= 2 * MARGIN + NOTE_W
    assert (pic.array[:, pic.width - MARGIN + 1 :] == BG).all()
    assert pic.height > 2 * MARGIN + 48 + 3 * 17  # at least 4 note lines
    assert grid(maps).width == 2 * MARGIN + 307  # the unsigned note (307 px) fits on one line


def test_fc_weights_10x320_get_rows_12px_tall() -> None:
    w = np.random.default_rng(4).normal(size=(10, 320))
    pic = filters(w)
    # uniform factor 3 (1024 // 320) along the 320 inputs; rows scaled by 12 (HEAT_ROW)
    assert [tuple(b) for b in pic.cells] == [(MARGIN, MARGIN + TITLE_PX + 8, 960, 120)]
    b = pic.cells[0]
    drawn = pic.array[b.y : b.y + b.h, b.x : b.x + b.w]
    colours = apply(normalize(w[None], mode="map", signed=True).values[0], "diverging")  # (10, 320, 3)
    np.testing.assert_array_equal(drawn[::12, ::3], colours)  # each entry a 12 x 3 block
    np.testing.assert_array_equal(drawn[11::12, 2::3], colours)
    assert pic.width == 2 * MARGIN + 960 and pic.height == 192


def test_tall_matrix_gets_wide_columns_and_the_note_says_both_scales(notes: list[list[str]]) -> None:
    w = np.random.default_rng(5).normal(size=(320, 10))
    pic = filters(w)
    assert [(b.w, b.h) for b in pic.cells] == [(120, 960)]
    assert notes[-1][-1] == "stretched: each row 3 px tall, each column 12 px wide"
    filters(w.T)
    assert notes[-1][-1] == "stretched: each row 12 px tall, each column 3 px wide"


@pytest.mark.parametrize(
    ("shape", "size", "stretched"),
    [
        ((2, 3), (96, 64), None),  # small: one factor, 32x cap
        ((64, 64), (256, 256), None),  # square: one factor
        ((64, 128), (256, 128), None),  # 2:1 -- one factor (the short side is half the long)
        ((10, 64), (320, 120), "each row 12 px tall, each column 5 px wide"),
        ((3, 300), (900, 36), "each row 12 px tall, each column 3 px wide"),
        ((100, 1000), (1000, 500), "each row 5 px tall, each column 1 px wide"),  # half the long side
        ((10, 5000), (1024, 120), "each row 12 px tall, each column 1 px wide"),  # averaged along columns only
    ],
)
def test_matrix_sizes(
    shape: tuple[int, int], size: tuple[int, int], stretched: str | None, notes: list[list[str]]
) -> None:
    pic = filters(np.random.default_rng(6).normal(size=shape))
    assert (pic.cells[0].w, pic.cells[0].h) == size
    said = [n for n in notes[-1] if n.startswith("stretched")]
    assert said == ([] if stretched is None else [f"stretched: {stretched}"])
    if shape == (10, 5000):
        assert "box-averaged from 10x5000 to 10x1024 px" in notes[-1]
