"""Jupyter display of a Trace and its Blocks (its import sets their `display` hooks: done by
`import convscope` in a notebook, or by the first `convscope.X` elsewhere; convscope/__init__.py).

    with cs.Probe(model) as probe: ...
    probe.trace                 # in a notebook: the block table (name, type, output, filters, parameters, a)
    probe.trace["conv1"]        # one block: x | W | z | a = f(z) | dL/dW | dL/dz | dL/da, labelled

It reads capture's Block and Trace and draws them with render's pieces, so it sits above both
(like inspect.py): render itself never imports capture (DESIGN.md §2, tests/test_architecture.py).
"""

from __future__ import annotations

import html

import torch

from convscope.capture import Block, Trace
from convscope.render.grid import filters, grid
from convscope.render.notebook import CELL_WIDTH, FLEX, _figure, _img
from convscope.render.picture import Picture
from convscope.render.report import PANELS

PANEL_WIDTH = 220  # px: the widest a Block's panel is shown (wider pictures are scaled down)
THUMB_MAPS = 16  # a Trace row shows at most this many maps of a
THUMB_CELL = 14  # px per map in a Trace row's thumbnail
GRADS = ("grad_weight", "grad_z", "grad_a")


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
    for field, symbol, caption in PANELS:
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


Block.display = block_html
Trace.display = trace_html
