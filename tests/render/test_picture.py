"""Picture: lossless PNG round trip, notebook display, data URI, stacking."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope.render import Box, Picture

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def random_picture(h: int = 5, w: int = 7, seed: int = 0) -> Picture:
    return Picture(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_png_round_trip_is_exact(tmp_path: Path) -> None:
    pic = random_picture()
    assert (pic.width, pic.height) == (7, 5)
    back = np.asarray(Image.open(io.BytesIO(pic.png())))
    np.testing.assert_array_equal(back, pic.array)
    pic.save(tmp_path / "p.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "p.png")), pic.array)


def test_notebook_and_html_forms_are_png() -> None:
    pic = random_picture()
    assert pic._repr_png_().startswith(PNG_SIGNATURE)
    uri = pic.data_uri()
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == pic.png()


def test_array_is_read_only_and_validated() -> None:
    pic = random_picture()
    with pytest.raises(ValueError):
        pic.array[0, 0, 0] = 1
    with pytest.raises(ValueError, match=r"uint8 array shaped \(H, W, 3\); got float64"):
        Picture(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"got uint8 \(2, 2\)"):
        Picture(np.zeros((2, 2), dtype=np.uint8))


def test_hstack_and_vstack_pad_align_and_offset_cells() -> None:
    a = Picture(np.zeros((4, 3, 3), dtype=np.uint8), cells=[Box(1, 1, 2, 2)])
    b = Picture(np.full((2, 5, 3), 9, dtype=np.uint8), cells=[Box(0, 0, 5, 2)])
    h = Picture.hstack([a, b], pad=2)
    assert (h.width, h.height) == (3 + 2 + 5, 4)
    np.testing.assert_array_equal(h.array[:2, 5:], b.array)
    assert (h.array[:, 3:5] == 255).all() and (h.array[2:, 5:] == 255).all()  # pad and below b
    assert h.cells == (Box(1, 1, 2, 2), Box(5, 0, 5, 2))
    v = Picture.vstack([a, b], pad=1, background=(0, 0, 0))
    assert (v.width, v.height) == (5, 4 + 1 + 2)
    np.testing.assert_array_equal(v.array[5:, :], b.array)
    assert v.cells == (Box(1, 1, 2, 2), Box(0, 5, 5, 2))
    with pytest.raises(ValueError, match="at least one Picture"):
        Picture.hstack([])
