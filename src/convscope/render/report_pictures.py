"""The inspect report's pictures of one block, from plain tensors: which colours, what is cut.

  panel(t, field, ...)       x, z, a, dL/dz, dL/da of one example: sequential colours when every
                             value is >= 0, diverging only when there are both signs
  filter_summary(W, ...)     W or dL/dW: the filters ranked by their norm, the first 16 of them
                             x the first 16 input channels (all on request), and a sentence saying
                             what is left out
  strongest(maps, k)         the k channels a map responds with most (the overview's strip, and
                             which maps a block page draws when it has more than SHOWN_MAPS)

Nothing here knows of a model or a trace: every input is a tensor (or an array) built above.

    pic, note = filter_summary(w, symbol="W", all_filters=False, norm="map", title="W · conv3")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from .grid import filters, grid
from .normalize import Mode
from .picture import Picture

SHOWN_FILTERS = 16  # filters (rows) of a deep layer's W and dL/dW drawn by default
SHOWN_INPUTS = 16  # input channels (columns) of each of them
COLOUR_FILTERS = 64  # filters over an RGB input are drawn as colour pictures, up to this many
ALL_CELL = 6  # px of one kernel slice when every filter and input is drawn (--all-filters)
SHOWN_MAPS = 64  # maps (channels) of one picture drawn by default: the strongest, when there are more
STRIP_MAPS = 8  # maps in the overview's strip of a block's strongest maps
STRIP_CELL = 40  # px of one map in that strip
IMAGE_SIDE = 160  # the input image is scaled up (integer factor) to at least this many px


@dataclass(frozen=True)
class Summary:
    """A drawn W or dL/dW, and in words what it shows and what it leaves out."""

    picture: Picture
    shown: str  # e.g. "16 of 512 filters, ranked by ‖W‖ (1.93 … 1.41), input channels 0–15 of 256"
    left_out: str  # e.g. "496 filters with ‖W‖ ≤ 1.41 and input channels 16–255"; "" when all drawn
    order: list[int]  # the filter indices drawn, top row first


def is_signed(t: Tensor) -> bool:
    """True when the tensor has a value < 0 (then its colours are diverging around 0)."""
    return bool((t < 0).any())


def panel(t: Tensor, *, norm: Mode, title: str, channels: list[int] | None = None) -> Picture:
    """One example's maps (C, H, W) or dense vector (F,), coloured by its own signs; with
    `channels`, only those maps (units), in that order, each labelled with its index."""
    signed = is_signed(t)
    labels: bool | list[str] = True
    if channels is not None:
        t, labels = t[channels], [str(c) for c in channels]
    if t.dim() == 1:
        return grid(t.reshape(1, -1), dense=True, signed=signed, norm=norm, title=title, labels=labels)
    return grid(t, signed=signed, norm=norm, title=title, labels=labels)


def colour_image(image: npt.NDArray[np.uint8]) -> Picture:
    """An RGB image (H, W, 3) uint8 as it is, scaled up by an integer factor to >= IMAGE_SIDE px."""
    side = max(image.shape[:2])
    f = max(1, -(-IMAGE_SIDE // side))
    return Picture(np.ascontiguousarray(image.repeat(f, axis=0).repeat(f, axis=1)))


def filter_summary(
    w: Tensor, *, symbol: str, all_filters: bool, norm: Mode, title: str
) -> Summary:
    """W or dL/dW (C_out, C_in, k, k) summarised: filters ranked by ‖·‖ (largest first, ties by
    index), the first SHOWN_FILTERS of them over input channels 0..SHOWN_INPUTS-1; filters over
    an RGB input as colour pictures (up to COLOUR_FILTERS); every one with `all_filters`.
    Dense weights (out, in) are one heat matrix (box-averaged past 1024 px, which it says)."""
    if w.dim() != 4:
        pic = filters(w, signed=True, norm=norm, title=title)
        rows, cols = w.shape
        return Summary(pic, f"all {rows} × {cols} weights as one matrix (a row per output unit)", "",
                       list(range(rows)))
    c_out, c_in = int(w.shape[0]), int(w.shape[1])
    norms = w.flatten(1).norm(dim=1)  # (C_out,)
    order = torch.argsort(norms, descending=True, stable=True)
    colour = c_in == 3
    if all_filters:
        n_out, n_in = c_out, c_in
    elif colour:
        n_out, n_in = min(c_out, COLOUR_FILTERS), c_in
    else:
        n_out, n_in = min(c_out, SHOWN_FILTERS), min(c_in, SHOWN_INPUTS)
    keep = order[:n_out]  # (n_out,) filter indices, largest ‖·‖ first
    sub = w[keep][:, :n_in]  # (n_out, n_in, k, k)
    labels = [str(int(i)) for i in keep]
    cell = None if (colour or not all_filters) else max(ALL_CELL, int(max(w.shape[2:])))
    head = (
        f"{title}: {n_out} of {c_out} filters ranked by ‖{symbol}‖"
        if n_out < c_out
        else f"{title}: {c_out} filters ranked by ‖{symbol}‖"
    )
    if n_in < c_in:
        head += f", inputs 0-{n_in - 1} of {c_in}"
    pic = filters(sub, signed=True, norm=norm, labels=labels, max_in=n_in, max_out=n_out,
                  cell=cell, title=head)
    hi, lo = float(norms[keep[0]]), float(norms[keep[-1]])
    which = "all" if n_out == c_out else f"{n_out} of {c_out}"
    shown = f"{which} filters, ranked by ‖{symbol}‖ ({_g(hi)} … {_g(lo)})"
    shown += f", input channels 0–{n_in - 1} of {c_in}" if n_in < c_in else f", all {c_in} input channel(s)"
    cut = []
    if n_out < c_out:
        cut.append(f"{c_out - n_out} filters with ‖{symbol}‖ ≤ {_g(float(norms[order[n_out]]))}")
    if n_in < c_in:
        cut.append(f"input channels {n_in}–{c_in - 1} of every filter")
    return Summary(pic, shown, " and ".join(cut), [int(i) for i in keep])


def strongest(maps: Tensor, k: int = STRIP_MAPS) -> tuple[list[int], str]:
    """The channels of one example's maps (C, H, W) or units (F,) that respond most, strongest
    first (ties by index): by mean value when every value is >= 0 (a after a ReLU), else by mean
    |value|. Returns the indices and how they were ranked."""
    signed = is_signed(maps)
    flat = maps.reshape(maps.shape[0], -1) if maps.dim() > 1 else maps.reshape(-1, 1)  # (C, N)
    score = flat.abs().mean(dim=1) if signed else flat.mean(dim=1)  # (C,)
    order = torch.argsort(score, descending=True, stable=True)[:k]
    how = "mean |value|" if signed else "mean value"
    return [int(i) for i in order], how


def strip(maps: Tensor, *, title: str) -> tuple[Picture, list[int], str]:
    """The overview's strip: the STRIP_MAPS strongest maps of one example, labelled by channel,
    on one shared scale so a weaker map looks weaker. Dense units: one cell per strongest unit."""
    idx, how = strongest(maps)
    signed = is_signed(maps)
    sel = maps[idx]  # (k, H, W) or (k,)
    labels = [str(i) for i in idx]
    if sel.dim() == 1 or sel.shape[1:] == (1, 1):
        pic = grid(sel.reshape(1, -1), dense=True, signed=signed, norm="layer", labels=labels,
                   title=title)
    else:
        pic = grid(sel, signed=signed, norm="layer", labels=labels, cell=STRIP_CELL, cols=len(idx),
                   title=title)
    return pic, idx, how


def _g(v: float) -> str:
    return f"{v:.3g}"
