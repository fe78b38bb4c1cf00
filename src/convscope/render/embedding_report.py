"""The embedding report (`convscope embed`): t-SNE of layer codes as pictures — self-contained HTML, PNGs, JSON.

    write_embedding_report(result, "embed/")   # embed/index.html, embed/embedding.json, embed/png/{scatter,grid}.png

Two pictures, as in Karpathy's cnnembed: a scatter of thumbnails (each image drawn small at its
t-SNE position, framed in its class colour; drawn in a seeded random order so no class always
lies on top) and the grid (the map snapped to side×side cells by linear assignment, one image per
cell, same frames). A class legend with counts, and the k-nearest-neighbour label agreement of the
map beside its chance level, so "do the classes cluster?" has a number. Opens offline.
Importing this module teaches `Embed` to draw itself in Jupyter.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from .html import picture_figure, write_report
from .picture import Box, Picture

# matplotlib's tab10, then tab20's light tones: class c gets PALETTE[c % len(PALETTE)]
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)  # fmt: skip
NO_LABEL = (60, 60, 60)
CANVAS = 1400  # px: the scatter's side
THUMB = 20  # px: a thumbnail in the scatter (plus its frame)
FRAME = 2  # px: the class-coloured frame
CELL_MAX = 32  # px: a grid cell's thumbnail at most (the image's own size when smaller)
GRID_MAX = 1400  # px: the grid picture's side at most

CSS = """
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;margin:6px 0}.legend span{font:12px ui-monospace,monospace}
.legend svg{vertical-align:middle;margin-right:4px}.note{color:#555;font-size:12px}
figure img.map{image-rendering:auto;max-width:100%}
"""


def colour(label: int) -> tuple[int, int, int]:
    return NO_LABEL if label < 0 else PALETTE[label % len(PALETTE)]


def _framed(thumb: npt.NDArray[np.uint8], side: int, rgb: tuple[int, int, int]) -> npt.NDArray[np.uint8]:
    """(h, w, 3) → (side + 2·FRAME, side + 2·FRAME, 3): resized (Pillow, antialiased), framed in rgb."""
    img = thumb if thumb.shape[:2] == (side, side) else np.asarray(
        Image.fromarray(thumb).resize((side, side), Image.Resampling.BILINEAR)
    )
    out = np.empty((side + 2 * FRAME, side + 2 * FRAME, 3), dtype=np.uint8)
    out[:] = rgb
    out[FRAME:-FRAME, FRAME:-FRAME] = img
    return out


def scatter(xy: Any, thumbs: Any, labels: Any, *, canvas: int = CANVAS, thumb: int = THUMB, seed: int = 0) -> Picture:
    """Each image drawn at its position (min-max scaled to the canvas, y up), framed in its class colour."""
    pts = np.asarray(xy, dtype=np.float64)  # (n, 2)
    lab = np.asarray(labels, dtype=np.int64)  # (n,)
    tile = thumb + 2 * FRAME
    room = canvas - tile
    lo, span = pts.min(0), np.ptp(pts, axis=0)
    unit = (pts - lo) / np.where(span > 0, span, 1.0)  # (n, 2) in [0, 1]
    xs = np.rint(unit[:, 0] * room).astype(int)
    ys = np.rint((1 - unit[:, 1]) * room).astype(int)  # y up
    out = np.full((canvas, canvas, 3), 255, dtype=np.uint8)
    cells = [Box(int(x), int(y), tile, tile) for x, y in zip(xs, ys, strict=True)]
    for i in np.random.default_rng(seed).permutation(len(pts)):
        x, y = xs[i], ys[i]
        out[y : y + tile, x : x + tile] = _framed(thumbs[i], thumb, colour(int(lab[i])))
    return Picture(out, cells=cells)


def grid_picture(cells: Any, thumbs: Any, labels: Any, *, cell: int | None = None) -> Picture:
    """One framed thumbnail per grid cell (row 0 at the top); empty cells white. cells: (side, side) rows."""
    grid = np.asarray(cells, dtype=np.int64)
    side = grid.shape[0]
    if cell is None:
        cell = max(4, min(CELL_MAX, int(thumbs.shape[1]), GRID_MAX // side - 2 * FRAME))
    tile = cell + 2 * FRAME
    out = np.full((side * tile, side * tile, 3), 255, dtype=np.uint8)
    boxes = []
    for r in range(side):
        for c in range(side):
            i = int(grid[r, c])
            boxes.append(Box(c * tile, r * tile, tile, tile))
            if i >= 0:
                out[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = _framed(thumbs[i], cell, colour(int(labels[i])))
    return Picture(out, cells=boxes)


def _name(classes: list[str], label: int) -> str:
    if label < 0:
        return "no label"
    return classes[label] if label < len(classes) else f"class {label}"


def legend(labels: Any, classes: list[str]) -> str:
    lab = np.asarray(labels, dtype=np.int64)
    items = []
    for c in sorted(set(lab.tolist())):
        r, g, b = colour(c)
        items.append(
            f"<span><svg width='14' height='14' aria-hidden='true'><rect width='14' height='14' fill='#{r:02x}{g:02x}{b:02x}'/></svg>"
            f"{html.escape(_name(classes, c))} ({int((lab == c).sum()):,})</span>"
        )
    return f"<div class='legend'>{''.join(items)}</div>"


def _body(e: Any, png: Path | None, files: dict[str, str]) -> str:
    r = e.result
    sc = scatter(r.xy, e.thumbs, r.labels)
    gp = grid_picture(e.cells, e.thumbs, r.labels)
    filled = int((np.asarray(e.cells) >= 0).sum())
    dim = int(r.codes.shape[1])
    agree = (
        f" Among each image's 10 nearest neighbours in the map, {100 * e.agreement:.1f}% share its class"
        f" (chance: {100 * e.chance:.1f}%)."
        if e.agreement is not None and e.chance is not None
        else ""
    )
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in e.seconds.items())
    return (
        f"<section><h2>{html.escape(r.layer)} codes of {r.n:,} images</h2><p class='note'>"
        f"{html.escape(e.model)} over {html.escape(e.data)}: each image's {dim:,} numbers at layer"
        f" {html.escape(r.layer)} (kept as float16: {r.codes_bytes / 2**20:.1f} MiB), PCA to"
        f" {int(r.pca_components.shape[0]) if r.pca_components is not None else 50} dimensions, then t-SNE"
        f" ({html.escape(r.method)}, perplexity {r.perplexity:g}, seed {r.seed}). Nearby images have"
        f" similar codes; distances between far-apart clusters mean little in t-SNE.{agree}"
        f" Time: {secs}.</p>{legend(r.labels, r.classes)}</section>\n"
        "<section><h2>scatter</h2><div class='figs'>"
        + picture_figure(sc, "each image at its t-SNE position, framed in its class colour", name="scatter",
                         png=png, files=files, css="map")
        + "</div></section>\n<section><h2>grid</h2><div class='figs'>"
        + picture_figure(gp, f"the map snapped to {e.side}×{e.side} cells by linear assignment ({filled:,} of"
                         f" {r.n:,} images placed, one per cell)", name="grid", png=png, files=files, css="map")
        + "</div></section>"
    )


def embedding_html(e: Any) -> str:
    """An HTML fragment (Jupyter), pictures inlined."""
    return f"<div>{_body(e, None, {})}</div>"


def write_embedding_report(e: Any, out_dir: str | Path) -> Path:
    """Write `index.html`, `embedding.json` and `png/{scatter,grid}.png` into `out_dir`; return the HTML path."""
    r = e.result
    header = f"<p>{html.escape(e.model)} · {html.escape(e.data)} · layer {html.escape(r.layer)} · {r.n:,} images</p>"
    return write_report(
        out_dir,
        title=f"convscope embed — {e.model}",
        header=header,
        css=CSS,
        body=lambda png, files: _body(e, png, files),
        json_name="embedding.json",
        summary=lambda files: _summary(e, files),
        indent=None,
    )


def _summary(e: Any, files: dict[str, str]) -> dict[str, Any]:
    r = e.result
    return {
        "model": e.model,
        "data": e.data,
        "layer": r.layer,
        "n": r.n,
        "dim": int(r.codes.shape[1]),
        "codes_bytes": r.codes_bytes,
        "method": r.method,
        "perplexity": r.perplexity,
        "seed": r.seed,
        "classes": list(r.classes),
        "xy": np.round(np.asarray(r.xy, dtype=np.float64), 4).tolist(),
        "labels": np.asarray(r.labels).tolist(),
        "indices": np.asarray(r.indices).tolist(),
        "grid": {"side": e.side, "cells": np.asarray(e.cells).tolist()},
        "neighbour_agreement": e.agreement,
        "chance": e.chance,
        "pictures": files,
        "seconds": {k: round(v, 3) for k, v in e.seconds.items()},
    }
