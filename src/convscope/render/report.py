"""The inspect report: one self-contained HTML page (pictures inlined, no network) plus PNG files.

For every block of a Trace: the layer spec (type, output size, filter size and stride,
parameter count with its formula), x, W, z, a and, after a backward, dL/dW, dL/dz, dL/da,
with the statistics of a; the top predictions; the glossary (DESIGN.md §1); and the input
image's finite-difference gradient beside the first layer's weight gradient, so the two
meanings of "gradient" are never confused.

    write_report(trace, out_dir="report", image=photo, logits=logits, classes=names)
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from convscope.analysis import image_gradient, map_stats
from convscope.capture import Block, Trace

from .grid import filters, grid
from .html import CSS, bar, head
from .normalize import Mode
from .picture import Picture

GLOSSARY: tuple[tuple[str, str, str], ...] = (
    ("x / a[l−1]", "x", "the block's input: the image for block 1, the previous activation map after that"),
    ("W, b", "weight, bias", "the filters (kernels, feature detectors), shape C_out × C_in × k × k"),
    ("W*x + b", "conv", "raw convolution output (\"convolved feature\")"),
    ("z", "z", "pre-activation: what enters the nonlinearity (after BatchNorm when there is one)"),
    ("a = f(z)", "a", "activation map = feature map (one per filter); \"rectified feature map\" when f is ReLU"),
    ("dL/dW", "grad_weight", "weight gradient: how the loss changes with each filter weight"),
    ("dL/dz, dL/da", "grad_z, grad_a", "activation gradients: how the loss changes with each unit"),
    ("∂x/∂u, ∂x/∂v", "image_gradient", "finite-difference image gradient (Sobel) — a property of an image, NOT dL/dW"),
)

# (field, symbol, caption, is_filter_layout)
PANELS: tuple[tuple[str, str, str, bool], ...] = (
    ("x", "x", "input of the block", False),
    ("weight", "W", "filters", True),
    ("z", "z", "pre-activation (diverging, 0 = white)", False),
    ("a", "a = f(z)", "activation map = feature map", False),
    ("grad_weight", "dL/dW", "weight gradient (summed over the batch)", True),
    ("grad_z", "dL/dz", "activation gradient", False),
    ("grad_a", "dL/da", "activation gradient", False),
)


@dataclass
class ReportInput:
    """What the report shows besides the trace."""

    title: str
    model: str  # how the model was named (zoo:..., file.py:Class)
    image: npt.NDArray[np.uint8]  # (H, W, 3) the image as fed (after resizing)
    image_name: str
    x: Tensor  # (1, C, H, W) the model's input tensor
    logits: Tensor  # (1, K)
    classes: list[str]
    target: int | None  # the class whose score was back-propagated
    norm: Mode = "map"
    notes: list[str] = field(default_factory=list)


def write_report(trace: Trace, info: ReportInput, out_dir: str | Path) -> Path:
    """Write `index.html`, `report.json` and one PNG per picture into `out_dir`; return the HTML path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    png_dir = out / "png"
    png_dir.mkdir(parents=True, exist_ok=True)
    if len(trace) == 0:
        raise ValueError("the trace has no blocks: the model has no conv/linear/activation layer")

    sections: list[str] = []
    blocks_json: list[dict[str, Any]] = []
    for i, (name, block) in enumerate(trace.items()):
        panels, meta = _block_panels(i, name, block, info, png_dir)
        sections.append(panels)
        blocks_json.append(meta)

    preds = _predictions(info)
    grads_html = _gradient_section(trace, info, png_dir)
    doc = _page(info, preds, grads_html, sections, trace)
    html_path = out / "index.html"
    html_path.write_text(doc, encoding="utf-8")
    summary = {
        "title": info.title,
        "model": info.model,
        "image": info.image_name,
        "target": info.target,
        "norm": info.norm,
        "predictions": preds,
        "blocks": blocks_json,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return html_path


# ------------------------------------------------------------------------------ pieces
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def _save(pic: Picture, png_dir: Path, stem: str) -> str:
    pic.save(png_dir / f"{stem}.png")
    return pic.data_uri()


def _block_panels(
    index: int, name: str, block: Block, info: ReportInput, png_dir: Path
) -> tuple[str, dict[str, Any]]:
    stem = f"{index:02d}_{_slug(name)}"
    spec = block.spec
    title = f"{name}"
    if block.norm_name:
        title += f" → {block.norm_name}"
    if block.act_name and block.act_name != name:
        title += f" → {block.act_name}"
    facts: list[tuple[str, str]] = []
    if spec is not None:
        facts.append(("type", spec.type))
        if spec.kernel_size is not None:
            k = "×".join(str(v) for v in spec.kernel_size)
            facts.append(("filters", f"{spec.out_channels} of {k} over {spec.in_channels} channel(s)"))
            facts.append(("stride / padding", f"{_tup(spec.stride)} / {_tup(spec.padding)}"))
        else:
            facts.append(("units", f"{spec.in_channels} → {spec.out_channels}"))
        facts.append(("parameters", spec.formula))
    if block.norm_type:
        facts.append(("norm", block.norm_type))
    facts.append(("activation f", block.activation or "none (z is the output)"))
    if block.out_shape is not None:
        facts.append(("output size", " × ".join(str(d) for d in block.out_shape)))

    meta: dict[str, Any] = {
        "name": name,
        "kind": block.kind,
        "norm": block.norm_name,
        "activation": block.act_name,
        "out_shape": list(block.out_shape or ()),
        "spec": None if spec is None else {"type": spec.type, "params": spec.params, "formula": spec.formula},
        "pictures": {},
    }
    stats_html = ""
    if block.a is not None:
        s = map_stats(block.a[:1])
        meta["a_stats"] = s.as_dict()
        stats_html = (
            "<p class='stats'>a (this image): "
            f"min {s.min:.4g} · max {s.max:.4g} · mean {s.mean:.4g} · "
            f"sparsity {100 * s.sparsity:.1f}% zeros · {s.dead_channels} of {block.a.shape[1]} maps all zero</p>"
        )
    figures: list[str] = []
    for fld, symbol, caption, is_filter in PANELS:
        t = getattr(block, fld)
        if t is None:
            continue
        if fld == "x" and index > 0 and t.dim() == 4 and t.shape[1] > 64:
            continue  # a wide input is the previous block's a: shown there
        t = t.detach().float()
        if not torch.isfinite(t).all():
            figures.append(_figure(None, symbol, f"{caption}: contains NaN/Inf — not drawn", fld))
            continue
        pic = _picture(t, fld, is_filter, info.norm, f"{symbol} · {name}")
        uri = _save(pic, png_dir, f"{stem}_{fld}")
        meta["pictures"][fld] = f"png/{stem}_{fld}.png"
        figures.append(_figure(uri, symbol, caption, fld))
    if block.stale:
        figures.append(f"<p class='warn'>overwritten in place, not shown: {', '.join(sorted(block.stale))}</p>")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    section = (
        f"<section class='block' id='{html.escape(_slug(name))}'>"
        f"<h2>{html.escape(title)}</h2><table class='spec'>{rows}</table>{stats_html}"
        f"<div class='figs'>{''.join(figures)}</div></section>"
    )
    return section, meta


def _picture(t: Tensor, fld: str, is_filter: bool, norm: Mode, title: str) -> Picture:
    signed = fld != "a" or bool((t < 0).any())
    if is_filter:
        return filters(t, signed=True, norm=norm, title=title)
    if t.dim() == 2:  # (B, F) dense
        return grid(t[:1], dense=True, signed=signed, norm=norm, title=title)
    return grid(t, sample=0, signed=signed, norm=norm, title=title)


def _figure(uri: str | None, symbol: str, caption: str, fld: str) -> str:
    img = f"<img src='{uri}' alt='{html.escape(symbol)}'>" if uri else ""
    return (
        f"<figure class='fig-{fld}'>{img}<figcaption><b>{html.escape(symbol)}</b> "
        f"<code>.{fld}</code> — {html.escape(caption)}</figcaption></figure>"
    )


def _tup(v: object) -> str:
    if isinstance(v, tuple):
        return "×".join(str(x) for x in v)
    return str(v)


def _predictions(info: ReportInput) -> list[dict[str, Any]]:
    probs = torch.softmax(info.logits.detach().float()[0], dim=-1)
    k = min(5, probs.numel())
    top = torch.topk(probs, k)
    return [
        {"class": int(i), "name": info.classes[int(i)] if int(i) < len(info.classes) else f"class {int(i)}",
         "probability": float(p)}
        for p, i in zip(top.values, top.indices, strict=True)
    ]


def _gradient_section(trace: Trace, info: ReportInput, png_dir: Path) -> str:
    """The image's finite-difference gradient next to the first block's weight gradient."""
    x = info.x[0].detach().float()  # (C, H, W)
    gu, gv = image_gradient(x)
    lum_u, lum_v = gu.mean(dim=0), gv.mean(dim=0)  # (H, W) averaged over colour channels
    pics = [
        ("du", grid(lum_u, signed=True, title="∂x/∂u (Sobel, across)", labels=False, cell=160), "∂x/∂u",
         "how the image's brightness changes left→right"),
        ("dv", grid(lum_v, signed=True, title="∂x/∂v (Sobel, down)", labels=False, cell=160), "∂x/∂v",
         "how it changes top→bottom"),
    ]
    first = next((b for b in trace.values() if b.grad_weight is not None), None)
    figs = [
        f"<figure><img src='{Picture(info.image).data_uri()}' alt='input image' class='photo'>"
        f"<figcaption><b>x</b> the input image ({html.escape(info.image_name)})</figcaption></figure>"
    ]
    for key, pic, sym, cap in pics:
        figs.append(_figure(_save(pic, png_dir, f"image_gradient_{key}"), sym, cap, "image_gradient"))
    if first is not None and first.grad_weight is not None:
        pic = filters(first.grad_weight.float(), signed=True, title=f"dL/dW · {first.name}")
        figs.append(_figure(_save(pic, png_dir, "weight_gradient_first"), "dL/dW",
                            f"weight gradient of {first.name}: one value per filter weight", "grad_weight"))
    return "".join(figs)


def _page(
    info: ReportInput, preds: list[dict[str, Any]], grads_html: str, sections: list[str], trace: Trace
) -> str:
    pred_rows = "".join(
        f"<tr class='pred'><td>{html.escape(p['name'])}{' ◀ target' if p['class'] == info.target else ''}</td>"
        f"<td>{bar(p['probability'])}</td>"
        f"<td>{100 * p['probability']:.1f}%</td></tr>"
        for p in preds
    )
    gloss_rows = "".join(
        f"<tr><td>{html.escape(s)}</td><td><code>{html.escape(api)}</code></td><td>{html.escape(m)}</td></tr>"
        for s, api, m in GLOSSARY
    )
    nav = "".join(f"<a href='#{html.escape(_slug(n))}'>{html.escape(n)}</a>" for n in trace)
    target = (
        f"Gradients are of L = score of class {info.target} ({html.escape(info.classes[info.target])})."
        if info.target is not None and info.target < len(info.classes)
        else "No backward ran: gradients are not shown."
    )
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in info.notes)
    return f"""<!doctype html>
<html lang="en">{head(info.title, CSS)}
<body><header><h1>{html.escape(info.title)}</h1>
<p>model <code>{html.escape(info.model)}</code> · image {html.escape(info.image_name)} ·
normalisation per {html.escape(info.norm)} · {target}</p></header><main>
<section id="predictions"><h2>Top predictions</h2><table>{pred_rows}</table>{notes}</section>
<section id="glossary"><h2>Glossary — what each picture is</h2>
<table class="gloss"><tr><th>symbol</th><th>API</th><th>meaning</th></tr>{gloss_rows}</table>
<p>The <b>feature map</b> (= <b>activation map</b>) of a filter is its picture <code>a = f(z)</code>: one map
per filter, showing where in the input that filter responds. <code>z</code> is the same map before the
nonlinearity and may be negative (blue); with ReLU, <code>a</code> is <code>z</code> with the negatives set
to 0. In kernel methods "feature map" means something else — the map φ that sends an input to a feature
space — which convscope does not show.</p>
<p>Colours: <code>a</code> ≥ 0 uses a sequential scale from dark (0) to bright (max);
<code>z</code> and every gradient use a diverging scale, blue &lt; 0, white = 0, red &gt; 0. Each map is
scaled {'on its own' if info.norm == 'map' else 'with its layer' if info.norm == 'layer' else 'on one global scale'};
a map that is constant (for example a dead filter's all-zero map) is drawn flat under a magenta hatch.</p></section>
<section id="gradients"><h2>Two different "gradients"</h2>
<p>The <b>image gradient</b> ∂x/∂u, ∂x/∂v is a finite difference between neighbouring pixels of the image:
edges light up whatever the network is. The <b>weight gradient</b> dL/dW is computed by back-propagation:
one number per filter weight saying how the loss L would change if that weight changed — it is what
training follows.</p><div class="figs">{grads_html}</div></section>
<nav>{nav}</nav>
{''.join(sections)}
</main></body></html>
"""
