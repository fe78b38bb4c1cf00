"""Jupyter display of capture and analysis results: HTML fragments with inline PNGs, sized for a cell.

    with cs.Probe(model) as probe: ...
    probe.trace                 # in a notebook: the block table (name, type, output, filters, parameters, a)
    probe.trace["conv1"]        # one block: x | W | z | a = f(z) | dL/dW | dL/dz | dL/da, labelled

The layers below may not import this one (DESIGN.md §2), so each result class holds a
`display` hook (a ClassVar, None until set) and its `_repr_html_` calls it; importing this
module (done by `convscope.render`, so by `import convscope`) sets the hooks of `Block`,
`Trace`, `Sensitivity` (an occlusion grid) and `EmbeddingResult`. The other results register
from their report modules (attribution, projection, occlusion, diagnose, units, embed, evolution).

Fragments carry no <style> or script: only inline `style` attributes that notebook sanitizers
keep, and every picture is a `data:image/png` URI, so an executed notebook shows them offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import numpy as np
import torch

from convscope.analysis.embedding import EmbeddingResult
from convscope.analysis.occlusion.occlusion import Sensitivity
from convscope.capture import Block, Trace

from .embedding_report import colour
from .grid import filters, grid
from .occlusion_report import heat, labels_picture
from .picture import Picture
from .report import PANELS

CELL_WIDTH = 880  # px: a notebook cell's usual width; no fragment is wider
PANEL_WIDTH = 220  # px: the widest a Block's panel is shown (wider pictures are scaled down)
THUMB_MAPS = 16  # a Trace row shows at most this many maps of a
THUMB_CELL = 14  # px per map in a Trace row's thumbnail
FLEX = "display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start"
CAPTION = "font-size:12px;line-height:1.3;max-width:{w}px"
GRADS = ("grad_weight", "grad_z", "grad_a")


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


def block_picture(block: Block, field: str) -> Picture | None:
    """The picture of one field of `block` as the notebook shows it (None: not kept, or NaN/Inf):
    filters for weight/grad_weight, example 0's maps otherwise; signed (diverging) unless it is
    an `a` with no negative value."""
    t = getattr(block, field)
    if t is None:
        return None
    t = t.detach().float()
    if not bool(torch.isfinite(t).all()):
        return None
    if field in ("weight", "grad_weight"):
        return filters(t, signed=True) if t.dim() == 4 else grid(t, dense=False, signed=True)
    signed = field != "a" or bool((t < 0).any())
    if t.dim() == 2:  # (B, F): a dense layer's units
        return grid(t, dense=True, signed=signed)
    return grid(t, sample=0, signed=signed)


def _facts(block: Block) -> list[str]:
    spec, out = block.spec, block.out_shape
    facts = [block.kind if spec is None else spec.type]
    if spec is not None and spec.kernel_size is not None:
        k = "×".join(str(v) for v in spec.kernel_size)
        facts.append(f"{spec.out_channels} filters of {k} over {spec.in_channels} channel(s)")
    if block.norm_type:
        facts.append(f"norm {block.norm_type}")
    facts.append(f"f = {block.activation or 'none (z is the output)'}")
    if out is not None:
        facts.append("output " + " × ".join(str(d) for d in out))
    if spec is not None:
        facts.append(f"parameters {spec.formula}")
    return facts


def block_html(block: Block) -> str:
    """x | W | z | a = f(z) | dL/dW | dL/dz | dL/da of one block, each labelled with its symbol,
    its attribute and its meaning (DESIGN.md §1); example 0 of the batch."""
    figs = []
    missing = []
    no_grads = all(getattr(block, f) is None for f in GRADS)
    for field, symbol, caption, _ in PANELS:
        pic = block_picture(block, field)
        if pic is None:
            if getattr(block, field) is not None:
                missing.append(f"{symbol} (NaN/Inf, not drawn)")
            elif field in GRADS and no_grads:
                missing.append(symbol)
            continue
        figs.append(_figure(pic, symbol, field, caption, PANEL_WIDTH))
    title = " → ".join(html.escape(n) for n in block.members)
    notes = ""
    if missing:
        why = " (run the backward inside the probe to get gradients)" if no_grads else ""
        notes += f"<p style='font-size:12px;color:#555'>not recorded: {html.escape(', '.join(missing))}{why}</p>"
    if block.stale:
        notes += f"<p style='color:#b91c1c'>overwritten in place, not shown: {html.escape(', '.join(sorted(block.stale)))}</p>"
    return (
        f"<div style='max-width:{CELL_WIDTH}px'><p style='margin:0 0 6px'><b><code>{title}</code></b> · "
        f"{html.escape(' · '.join(_facts(block)))}</p><div style='{FLEX}'>{''.join(figs)}</div>{notes}"
        "<p style='font-size:11px;color:#555;margin:6px 0 0'>a ≥ 0: dark = 0, bright = max; z and gradients:"
        " blue &lt; 0, white = 0, red &gt; 0; each map on its own scale; a constant map under a magenta"
        " hatch. Example 0 of the batch.</p></div>"
    )


def _thumb(block: Block) -> str:
    a = block.a if block.a is not None else block.z
    if a is None or a.dim() not in (2, 4) or not bool(torch.isfinite(a).all()):
        return ""
    a = a.detach().float()[:1, :THUMB_MAPS]  # (1, C', H, W) or (1, F')
    if a.dim() == 2:
        pic = grid(a, dense=True, labels=False, cell=THUMB_CELL, cols=THUMB_MAPS)
    else:
        pic = grid(a, labels=False, cell=THUMB_CELL, cols=THUMB_MAPS)
    return _img(pic, f"a of {block.name}", THUMB_MAPS * (THUMB_CELL + 4))


def trace_html(trace: Trace) -> str:
    """The trace's block table: name, type, output size, filters, parameters with their formula,
    activation, what was kept, and the first maps of a (example 0). Index a block to see it whole."""
    rows = []
    for name, b in trace.items():
        spec = b.spec
        kernel = "" if spec is None or spec.kernel_size is None else "×".join(str(v) for v in spec.kernel_size)
        kept = [f for f in ("x", "conv", "z", "a", "weight", "grad_weight", "grad_z", "grad_a") if getattr(b, f) is not None]
        cells = [
            f"<code>{html.escape(name)}</code>",
            html.escape(b.kind if spec is None else spec.type),
            html.escape(" × ".join(str(d) for d in b.out_shape or ())),
            html.escape(kernel),
            html.escape("0" if spec is None else spec.formula),
            html.escape(" ".join(v for v in (b.norm_type, b.activation) if v) or "none"),
            html.escape(", ".join(kept)),
            _thumb(b),
        ]
        rows.append("<tr>" + "".join(f"<td style='text-align:left;padding:2px 8px'>{c}</td>" for c in cells) + "</tr>")
    head = ("block", "type", "output", "kernel", "parameters", "norm, f", "kept", "a (example 0)")
    th = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in head)
    return (
        f"<div style='max-width:{CELL_WIDTH}px;overflow-x:auto'><p style='margin:0 0 4px'>Trace of {len(trace)}"
        f" block(s): <code>trace[name]</code> shows one block's x, W, z, a and gradients.</p>"
        f"<table style='border-collapse:collapse;font-size:12px'><tr>{th}</tr>{''.join(rows)}</table></div>"
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


Block.display = block_html
Trace.display = trace_html
Sensitivity.display = sensitivity_html
EmbeddingResult.display = embedding_result_html
