"""The feature-evolution report (`convscope evolution`, Zeiler & Fergus Fig. 4): HTML, PNGs, JSON.

    write_evolution_report(evo, "evo/")   # evo/index.html, evo/evolution.json, evo/png/*.png
    evo                                   # in Jupyter: draws itself

One strip per feature map, one column per kept checkpoint in step order: the input patch under
the receptive field of the map's strongest activation over a fixed held-out set, and below it
that activation's deconvnet projection cropped to the same box. The data classes below are what
`convscope.evolution` fills (this layer knows nothing of models). Opens offline: pictures are
inlined, the reports' CSP, no script.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import Tensor

from .attribution import _upscale
from .colormap import mark_constant
from .html import write_report
from .picture import Picture

PAGE_PX = 1400  # the report is laid out to fit this width
LABEL_PX = 86  # the row labels' column
MAX_CELL_PX = 96  # a patch is shown at most this large (px, long side) ...
MIN_CELL_PX = 40  # ... and at least this large on a wide page; on a narrow window down to MIN_SHOWN_PX
MIN_SHOWN_PX = 30  # a column is never narrower (a strip with more columns than fit scrolls)


@dataclass(frozen=True)
class EvolutionColumn:
    """One kept checkpoint: its name and how many training steps its weights had."""

    name: str
    steps: int


@dataclass(frozen=True)
class EvolutionCell:
    """A feature map's strongest activation over the held-out set, with one checkpoint's weights."""

    value: float  # the activation (the map's maximum over every position and image)
    index: int  # which held-out image
    position: tuple[int, int]  # (i, j) in the map
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open: the input pixels under (i, j)
    patch: Tensor  # (C, h, w) in [0, 1]: the image under the box, as shown to people
    projection: Tensor  # (C, h, w): the activation's deconvnet projection, cropped to the box


@dataclass
class Evolution:
    """`strips[c]`: feature map c's cells, one per column (checkpoint), in step order."""

    run: str
    model: str
    layer: str
    layer_tensor: str  # which tensor the layer name means, e.g. "a of block conv2 (after relu2)"
    heldout: str  # what the held-out set is
    images: int
    columns: list[EvolutionColumn]
    strips: dict[int, list[EvolutionCell]]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def _repr_html_(self) -> str:
        return f"<div>{_body(self, None, {})}</div>"


def _patch_picture(patch: Tensor, size: int) -> Picture:
    v = np.clip(patch.detach().float().cpu().numpy(), 0, 1)  # (C, h, w)
    rgb = np.rint(255 * v).astype(np.uint8).transpose(1, 2, 0)  # (h, w, C)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return _upscale(np.ascontiguousarray(rgb[:, :, :3]), size)


def _projection_picture(projection: Tensor, size: int) -> Picture:
    """render.attribution's "rgb" style (grey = 0, each crop on its own scale 0.5 + 0.5·v/max|v|);
    a one-channel projection in grey; an all-zero one under the magenta "no information" hatch."""
    v: npt.NDArray[np.float64] = projection.detach().double().cpu().numpy()  # (C, h, w)
    peak = float(np.abs(v).max()) if v.size else 0.0
    v01 = 0.5 + 0.5 * v / peak if peak > 0 else np.full_like(v, 0.5)
    rgb = np.rint(255 * np.clip(v01, 0, 1)).astype(np.uint8).transpose(1, 2, 0)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    pic = _upscale(np.ascontiguousarray(rgb[:, :, :3]), size)
    if peak > 0:
        return pic
    big = pic.array.copy()
    mark_constant(big)
    return Picture(big, cells=pic.cells)


def _cell_px(columns: int) -> int:
    """The displayed patch size: as large as fits PAGE_PX with `columns` columns."""
    room = PAGE_PX - 2 * 24 - 2 * 17 - LABEL_PX  # main's and a section's padding and border
    return max(MIN_CELL_PX, min(MAX_CELL_PX, room // max(columns, 1) - 6))


def _css(columns: int) -> str:
    px = _cell_px(columns)
    return (
        # the columns shrink to the window (down to MIN_SHOWN_PX; below that the strip scrolls)
        f".strip{{display:grid;grid-template-columns:{LABEL_PX}px repeat({columns},minmax({MIN_SHOWN_PX}px,{px + 4}px));"
        "gap:4px 2px;align-items:center;overflow-x:auto;padding-bottom:4px}"
        ".strip .lab{font-size:11px;color:#555;text-align:right;padding-right:6px}"
        ".strip .col{font:11px ui-monospace,monospace;color:#333;text-align:center}"
        f".strip img{{width:100%;max-width:{px}px;aspect-ratio:1;height:auto;object-fit:contain;image-rendering:pixelated;"
        "border:1px solid #ddd;background:#fff;display:block}"
        ".strip .val{font:11px ui-monospace,monospace;color:#333;text-align:center;overflow-wrap:anywhere}"
        ".note{color:#555;font-size:12px}main{max-width:1400px;box-sizing:border-box}"
        "table.spec td{padding-right:12px}"
    )


def _img(pic: Picture, alt: str, name: str, png: Path | None, files: dict[str, str]) -> str:
    if png is not None:
        pic.save(png / f"{name}.png")
        files[name] = f"png/{name}.png"
    return f'<img src="{pic.data_uri()}" alt="{html.escape(alt)}" title="{html.escape(alt)}">'


def _steps(n: int) -> str:
    return f"{n:,} step" if n == 1 else f"{n:,} steps"


def _sign_note(evo: Evolution) -> str:
    first = next((cells[0] for cells in evo.strips.values() if cells), None)
    if first is not None and first.projection.shape[0] == 1:
        return "lighter = positive, darker = negative"
    return "colour = which input channel it favours"


def _body(evo: Evolution, png: Path | None, files: dict[str, str]) -> str:
    cols = evo.columns
    up = MAX_CELL_PX  # PNG long side at least (integer upscale, crisp); the page shows it at _cell_px
    intro = (
        "<section><h2>what this shows</h2><p class='note'>"
        f"For each feature map of <b>{html.escape(evo.layer)}</b> ({html.escape(evo.layer_tensor)}), its"
        f" strongest activation over the same {evo.images:,} held-out images ({html.escape(evo.heldout)})"
        f" with the weights of each kept checkpoint, left to right in training steps (Zeiler &amp; Fergus"
        " Fig. 4). Top row: the input patch under that activation's receptive field. Bottom row: the"
        " activation's deconvnet projection (every other activation of the layer set to zero), cropped to"
        f" the same box; grey = 0, {html.escape(_sign_note(evo))}, each crop on its own scale."
        " A hatched crop is all zero: the map never fired (a dead map at that checkpoint)."
        " Below each column: the activation's value, and which held-out image it came from.</p>"
        "<table class='spec'><tr><th>run</th><td>" + html.escape(evo.run) + "</td></tr>"
        "<tr><th>model</th><td>" + html.escape(evo.model) + "</td></tr>"
        "<tr><th>checkpoints</th><td>"
        + html.escape(", ".join(f"{c.name} ({_steps(c.steps)})" for c in cols))
        + "</td></tr></table>"
        + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in evo.notes)
        + "</section>"
    )
    parts = [intro]
    for ch, cells in evo.strips.items():
        head = "<div class='lab'>after</div>" + "".join(
            f"<div class='col'>{_steps(c.steps)}</div>" for c in cols
        )
        patches = "<div class='lab'>input patch</div>" + "".join(
            "<div>"
            + _img(
                _patch_picture(cell.patch, up),
                f"map {ch}, {col.name}: held-out image {cell.index}, box {cell.box}",
                f"map{ch}-{col.name}-patch",
                png,
                files,
            )
            + "</div>"
            for col, cell in zip(cols, cells, strict=True)
        )
        projections = "<div class='lab'>deconvnet</div>" + "".join(
            "<div>"
            + _img(
                _projection_picture(cell.projection, up),
                f"map {ch}, {col.name}: deconvnet projection of a = {cell.value:.4g} at {cell.position}",
                f"map{ch}-{col.name}-deconvnet",
                png,
                files,
            )
            + "</div>"
            for col, cell in zip(cols, cells, strict=True)
        )
        values = "<div class='lab'>max a · image</div>" + "".join(
            f"<div class='val'>{cell.value:.3g}<br>#{cell.index}</div>" for cell in cells
        )
        last = cells[-1]
        parts.append(
            f"<section><h2>{html.escape(evo.layer)} · map {ch}</h2>"
            f"<p class='note'>final: a = {last.value:.4g} on held-out image {last.index} at (i, j) ="
            f" {last.position}, box (y0, x0, y1, x1) = {last.box}</p>"
            f"<div class='strip'>{head}{patches}{projections}{values}</div></section>"
        )
    return "\n".join(parts)


def _summary(evo: Evolution, files: dict[str, str]) -> dict[str, Any]:
    return {
        "run": evo.run,
        "model": evo.model,
        "layer": evo.layer,
        "layer_tensor": evo.layer_tensor,
        "heldout": evo.heldout,
        "images": evo.images,
        "checkpoints": [{"name": c.name, "steps": c.steps} for c in evo.columns],
        "maps": [
            {
                "channel": ch,
                "cells": [
                    {
                        "checkpoint": col.name,
                        "steps": col.steps,
                        "value": cell.value,
                        "index": cell.index,
                        "position": list(cell.position),
                        "box": list(cell.box),
                        "patch": files.get(f"map{ch}-{col.name}-patch"),
                        "deconvnet": files.get(f"map{ch}-{col.name}-deconvnet"),
                    }
                    for col, cell in zip(evo.columns, cells, strict=True)
                ],
            }
            for ch, cells in evo.strips.items()
        ],
        "notes": evo.notes,
        "seconds": round(evo.seconds, 3),
    }


def write_evolution_report(evo: Evolution, out_dir: str | Path) -> Path:
    """Write `index.html`, `evolution.json` and `png/*.png` into `out_dir`; return the HTML path."""
    header = (
        f"<p>{html.escape(evo.model)} · layer {html.escape(evo.layer)} · {len(evo.strips)} feature maps ·"
        f" {len(evo.columns)} checkpoints · {html.escape(evo.run)}</p>"
    )
    return write_report(
        out_dir,
        title=f"convscope evolution — {evo.layer}",
        header=header,
        css=_css(len(evo.columns)),
        body=lambda png, files: _body(evo, png, files),
        json_name="evolution.json",
        summary=lambda files: _summary(evo, files),
    )
