"""Picture: a uint8 RGB image (H, W, 3) that knows where its cells are, and how to become a PNG.

Every renderer in convscope.render returns one. In Jupyter it shows itself (`_repr_png_`); in HTML
it is a `data_uri()`; on disk it is `save(path)`. `cells` holds the box of each drawn map, in
drawing order, so a caller can tell which channel a pixel belongs to (hover, click, tests).

    pic = grid(a)                       # a: (B, C, H, W)
    pic.save("a.png"); pic.cells[3]     # Box(x=..., y=..., w=..., h=...) of channel 3
    Picture.hstack([pic, legend(0, 1, signed=False)])
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)


class Box(NamedTuple):
    """Where one map is drawn: top-left corner (x, y), width w and height h, in pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def center(self) -> tuple[int, int]:
        """(x, y) of the pixel at the middle of the box."""
        return self.x + self.w // 2, self.y + self.h // 2


class Picture:
    """A read-only uint8 RGB array (H, W, 3), plus the boxes of the maps drawn in it."""

    __slots__ = ("array", "cells")

    array: npt.NDArray[np.uint8]
    cells: tuple[Box, ...]

    def __init__(self, array: npt.NDArray[np.uint8], *, cells: Sequence[Box] = ()) -> None:
        arr = np.asarray(array)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(
                f"Picture needs a uint8 array shaped (H, W, 3); got {arr.dtype} {tuple(arr.shape)}"
            )
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"Picture needs at least one pixel; got shape {tuple(arr.shape)}")
        view = arr.view()
        view.flags.writeable = False
        self.array = view
        self.cells = tuple(Box(*c) for c in cells)

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    def __repr__(self) -> str:
        return f"Picture({self.width}×{self.height}, {len(self.cells)} cells)"

    def image(self) -> Image.Image:
        """The picture as a Pillow RGB image (a copy)."""
        return Image.fromarray(np.ascontiguousarray(self.array))

    def png(self) -> bytes:
        """PNG-encoded bytes (lossless: reading them back gives `array` exactly)."""
        buf = io.BytesIO()
        self.image().save(buf, format="PNG")
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a PNG file (whatever the suffix: the bytes are always PNG)."""
        with open(path, "wb") as f:
            f.write(self.png())

    def data_uri(self) -> str:
        """`data:image/png;base64,...` for an <img src=...> in a self-contained HTML page."""
        return "data:image/png;base64," + base64.b64encode(self.png()).decode("ascii")

    def _repr_png_(self) -> bytes:
        return self.png()

    @staticmethod
    def hstack(pictures: Sequence[Picture], *, pad: int = 8, background: RGB = WHITE) -> Picture:
        """Pictures side by side, top-aligned, `pad` pixels apart."""
        return _stack(pictures, axis=1, pad=pad, background=background)

    @staticmethod
    def vstack(pictures: Sequence[Picture], *, pad: int = 8, background: RGB = WHITE) -> Picture:
        """Pictures one under another, left-aligned, `pad` pixels apart."""
        return _stack(pictures, axis=0, pad=pad, background=background)


def _stack(pictures: Sequence[Picture], *, axis: int, pad: int, background: RGB) -> Picture:
    if not pictures:
        raise ValueError("nothing to stack: pass at least one Picture")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    sizes = [(p.height, p.width) for p in pictures]
    along = sum(s[axis] for s in sizes) + pad * (len(pictures) - 1)
    across = max(s[1 - axis] for s in sizes)
    shape = (along, across) if axis == 0 else (across, along)
    out = np.empty((*shape, 3), dtype=np.uint8)
    out[:] = background
    cells: list[Box] = []
    offset = 0
    for p in pictures:
        y, x = (offset, 0) if axis == 0 else (0, offset)
        out[y : y + p.height, x : x + p.width] = p.array
        cells.extend(Box(c.x + x, c.y + y, c.w, c.h) for c in p.cells)
        offset += (p.height if axis == 0 else p.width) + pad
    return Picture(out, cells=cells)
