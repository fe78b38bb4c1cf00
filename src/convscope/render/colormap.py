"""Colormaps as 256x3 uint8 lookup tables: values in [0, 1] -> RGB.

  "sequential"  viridis: dark purple at 0, yellow at 1 -- for a >= 0 (0 -> darkest)
  "diverging"   RdBu_r: blue at 0, near-white at 0.5, red at 1 -- for signed data centred on 0
  "gray"        black -> white

The tables are read from matplotlib once (the only use of matplotlib) and cached. A value v
takes entry floor(v * 255 + 0.5), so 0.5 (a signed 0) is exactly entry 128, the colour
matplotlib itself gives RdBu_r(0.5). MARKER is a colour in none of the tables: pixels of that
colour are annotation, never data: `mark_constant` draws the hatch that flags a constant map.

    rgb = apply(normalize(z, signed=True).values, "diverging")   # (..., 3) uint8
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import numpy.typing as npt

Name = Literal["sequential", "diverging", "gray"]
NAMES: tuple[Name, ...] = ("sequential", "diverging", "gray")
_MATPLOTLIB_NAMES = {"sequential": "viridis", "diverging": "RdBu_r"}

MARKER: tuple[int, int, int] = (255, 0, 255)  # magenta: in no table, so it can only be annotation
CENTER = 128  # the table entry a signed 0 (value 0.5) takes


@functools.cache
def lut(name: Name) -> npt.NDArray[np.uint8]:
    """The (256, 3) uint8 table of a colormap (read-only, built once)."""
    if name not in NAMES:
        raise ValueError(f"unknown colormap {name!r}; choose one of {NAMES}")
    if name == "gray":
        table = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    else:
        from matplotlib import colormaps  # imported here: only the tables are wanted

        rgba = colormaps[_MATPLOTLIB_NAMES[name]](np.linspace(0.0, 1.0, 256))  # (256, 4)
        table = np.rint(rgba[:, :3] * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def index(values01: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Table entries 0..255 for values in [0, 1] (values outside are clipped to the ends)."""
    v = np.asarray(values01, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError("colormap input has NaN or infinite values; normalize finite data first")
    return np.floor(np.clip(v, 0.0, 1.0) * 255 + 0.5).astype(np.intp)


def apply(values01: npt.ArrayLike, name: Name) -> npt.NDArray[np.uint8]:
    """RGB colours (..., 3) uint8 of values in [0, 1] (any shape) under colormap `name`."""
    return lut(name)[index(values01)]


def mark_constant(rgb: npt.NDArray[np.uint8]) -> None:
    """Mark a drawn constant map (h, w, 3) in place: a border and a diagonal hatch in MARKER."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    b = 2 if min(h, w) >= 12 else 1
    mask = ((xx + yy) % 8 < 2) | (yy < b) | (yy >= h - b) | (xx < b) | (xx >= w - b)
    rgb[mask] = MARKER
