"""Jupyter display of analysis results: HTML fragments with inline PNGs, sized for a cell.

The layers below may not import this one (DESIGN.md §2), so each result class holds a
`display` hook (a ClassVar, None until set) and its `_repr_html_` calls it; importing this
module (done by `convscope.render`, so by `import convscope` in a notebook, or by the first
`convscope.X` elsewhere: convscope/__init__.py) sets the hooks of `Sensitivity`
(an occlusion grid) and `EmbeddingResult`. The other results register from their report modules
(attribution, projection, occlusion, diagnose, units, embed, evolution). `Trace` and `Block`
are capture's, which render never imports: their hooks are set one layer up, in
convscope/display.py, from the pieces here (`_img`, `_figure`).

Fragments carry no <style> or script: only inline `style` attributes that notebook sanitizers
keep, and every picture is a `data:image/png` URI, so an executed notebook shows them offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import numpy as np

from convscope.analysis.embedding import EmbeddingResult
from convscope.analysis.occlusion.occlusion import Sensitivity

from .embedding_report import colour
from .occlusion_report import heat, labels_picture
from .picture import Picture

CELL_WIDTH = 880  # px: a notebook cell's usual width; no fragment is wider
FLEX = "display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start"
CAPTION = "font-size:12px;line-height:1.3;max-width:{w}px"


def _img(pic: Picture, alt: str, width: int | None = None) -> str:
    w = min(pic.width, width or pic.width)
    return (
        f'<img src="{pic.data_uri()}" alt="{html.escape(alt)}" width="{w}" '
        'style="image-rendering:pixelated;border:1px solid #ddd;max-width:100%">'
    )


def _figure(pic: Picture, symbol: str, api: str, caption: str, width: int) -> str:
    w = min(pic.width, width)
    return (
        f'<figure style="margin:0">{_img(pic, symbol, width)}'
        f'<figcaption style="{CAPTION.format(w=max(w, 140))}"><b>{html.escape(symbol)}</b> '
        f"<code>.{html.escape(api)}</code><br>{html.escape(caption)}</figcaption></figure>"
    )


def sensitivity_html(g: Sensitivity) -> str:
    """ZF Fig. 7 (b), (d), (e) of an occlusion grid: one cell per occluder position."""
    figs = []
    if g.feature is not None:
        f = g.feature.detach().double().numpy()
        figs.append(_figure(heat(f, float(f.min()), float(f.max()), 200), "(b)", "feature",
                            f"total activation of map {g.channel} of {g.layer} per occluder position", 200))
    p = g.probability.detach().double().numpy()
    figs.append(_figure(heat(p, 0.0, 1.0, 200), "(d)", "probability",
                        f"probability of class {g.target} (0 dark … 1 bright); unoccluded {g.clean_probability:.3f}", 200))
    figs.append(_figure(labels_picture(g.label.detach().long().numpy(), 200), "(e)", "label",
                        f"most probable class per position: {_classes(g.label.unique().tolist())}", 200))
    return (
        f"<div style='max-width:{CELL_WIDTH}px'><p style='margin:0 0 6px'>Occlusion: a {g.window}-pixel square,"
        f" stride {g.stride}, {len(g.rows)} × {len(g.cols)} positions</p><div style='{FLEX}'>{''.join(figs)}</div></div>"
    )


def _classes(labels: Iterable[int]) -> str:
    return ", ".join(str(int(k)) for k in labels)


def embedding_picture(r: EmbeddingResult, side: int = 360) -> Picture:
    """The t-SNE map as coloured dots (one per image, its class colour), min-max scaled to `side`."""
    xy = np.asarray(r.xy, dtype=np.float64)  # (n, 2)
    out = np.full((side, side, 3), 255, dtype=np.uint8)
    if len(xy):
        lo, span = xy.min(axis=0), np.ptp(xy, axis=0)
        span[span == 0] = 1.0
        pos = np.rint((xy - lo) / span * (side - 5) + 2).astype(np.int64)  # (n, 2) in [2, side - 3]
        for (px, py), label in zip(pos, r.labels, strict=True):
            row = side - 1 - py  # y grows upwards
            out[row - 1 : row + 2, px - 1 : px + 2] = colour(int(label))
    return Picture(out)


def embedding_result_html(r: EmbeddingResult) -> str:
    present = sorted({int(v) for v in r.labels.tolist()})
    names = "".join(
        f"<span style='margin-right:10px'><span style='color:rgb{colour(k)}'>■</span> "
        f"{html.escape(r.classes[k] if 0 <= k < len(r.classes) else ('no label' if k < 0 else f'class {k}'))}</span>"
        for k in present
    )
    return (
        f"<div style='max-width:{CELL_WIDTH}px'><p style='margin:0 0 4px'>t-SNE of <code>{html.escape(r.layer)}</code>"
        f" codes of {r.n:,} images ({html.escape(r.method)}, perplexity {r.perplexity:g}, seed {r.seed})</p>"
        f"{_img(embedding_picture(r), 't-SNE map')}<p style='font-size:12px'>{names}</p></div>"
    )


Sensitivity.display = sensitivity_html
EmbeddingResult.display = embedding_result_html
