"""The diagnose report: one self-contained HTML page (pictures inlined, no network) plus diagnosis.json.

First whether the weights look untrained (then the findings describe a random initialisation).
For each finding group of a `Diagnosis` (repeats of one kind in layers of one kind are one row,
every layer listed under it): its summary with the numbers, the advice, the evidence, and
pictures of the offending filters next to healthy ones of the same layer — their weights W, each
filter's activation map a on the input where it responds most, and its mean map over the data
(maps of one picture share one scale, so a weak filter looks weak; an all-zero map is drawn
flat under a magenta hatch). Then the per-layer table, gradient health on a log scale against
CS231n's ~1e-3 update/weight ratio, the first layer's filters with their roughness, and every
threshold used.

    write_diagnosis_report(diag, "diag/", model="zoo:convnetjs-cifar")   # diag/index.html, diag/diagnosis.json

Importing this module teaches `Diagnosis` to draw itself in Jupyter (`diagnosis_html`).
"""

from __future__ import annotations

import html
import json
import math
import statistics
from pathlib import Path

import torch
from torch import Tensor

from convscope.analysis.diagnose import (
    THRESHOLD_TEXT,
    Diagnosis,
    Finding,
    FindingGroup,
    LayerSummary,
    group_findings,
)

from .grid import filters, grid
from .html import page

SHOWN = 12  # at most this many offending filters per picture
HEALTHY = 4  # ... next to at most this many healthy ones
TAG = {"dead": "dead", "mostly_dead": "rare", "noisy": "noisy", "saturated": "sat", "nonfinite": "NaN"}
KIND_TITLE = {
    "nonfinite": "NaN / Inf activations",
    "dead": "dead filters",
    "mostly_dead": "mostly-dead filters",
    "noisy": "noisy first-layer filters",
    "saturated": "saturated units",
    "exploding_gradient": "exploding gradient",
    "vanishing_gradient": "vanishing gradient",
    "update_ratio": "update / weight ratio",
}
RATIO_LO, RATIO_HI = -7, 1  # log10 range of the update-ratio scale

CSS = """
.finding{border-left:5px solid #9ca3af;padding:8px 12px;margin:12px 0;background:#fcfcfc}
.finding.high{border-color:#b91c1c}.finding.medium{border-color:#d97706}.finding.low{border-color:#6b7280}
.finding h3{margin:0 0 4px;font-size:15px}.sev{font-size:11px;text-transform:uppercase;padding:1px 6px;
border-radius:3px;color:#fff;margin-right:6px;vertical-align:middle}.sev.high{background:#b91c1c}
.sev.medium{background:#d97706}.sev.low{background:#6b7280}.advice{color:#374151;font-style:italic}
details{margin:4px 0}summary{cursor:pointer;color:#2563eb;font-size:12px}
pre{font-size:11px;background:#f3f4f6;padding:6px;overflow:auto;max-height:240px}
div.scroll{overflow-x:auto;max-width:100%}svg.ratios{max-width:100%;height:auto}table.layers{border-collapse:collapse;font-size:13px}table.layers th,table.layers td{border:1px solid #e5e7eb;
padding:3px 8px;text-align:right;white-space:nowrap}table.layers th:first-child,table.layers td:first-child{text-align:left;
font-family:ui-monospace,monospace}table.layers td.flag{color:#b91c1c;font-weight:600}
.count{display:inline-block;min-width:70px;font-weight:600}.ok{color:#15803d}
.untrained{border:1px solid #d97706;background:#fffbeb;padding:8px 12px;margin:8px 0}
ul.members{font-size:13px;margin:4px 0;columns:3 320px}
"""


def write_diagnosis_report(
    diagnosis: Diagnosis, out_dir: str | Path, *, model: str = "model", title: str | None = None
) -> Path:
    """Write `index.html` and `diagnosis.json` into `out_dir`; return the HTML path."""
    if not isinstance(diagnosis, Diagnosis):
        raise TypeError(f"write_diagnosis_report needs a Diagnosis, got {type(diagnosis).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnosis.json").write_text(diagnosis.to_json(), encoding="utf-8")
    doc = render_page(diagnosis, model=model, title=title or f"convscope diagnose — {model}")
    path = out / "index.html"
    path.write_text(doc, encoding="utf-8")
    return path


def render_page(d: Diagnosis, *, model: str, title: str) -> str:
    """The whole HTML document of a diagnosis."""
    lr = f"lr {d.lr:g}" + (" (assumed)" if d.lr_assumed else "")
    header = (
        f"<p>model <code>{_e(model)}</code> · data {_e(d.data)} · {d.inputs:,} inputs · {_e(lr)}</p>"
    )
    return page(title=title, header=header, body=_body(d), css=CSS)


def diagnosis_html(d: Diagnosis) -> str:
    """An HTML fragment (Jupyter): the report's sections, pictures inlined."""
    lr = f"lr {d.lr:g}" + (" (assumed)" if d.lr_assumed else "")
    return f"<div><p>data {_e(d.data)} · {d.inputs:,} inputs · {_e(lr)}</p>{_body(d)}</div>"


def _body(d: Diagnosis) -> str:
    layers = {s.name: s for s in d.layers}
    body = [
        _summary(d),
        "<section id='findings'><h2>Findings</h2>"
        + ("".join(_finding_box(group, layers) for group in _groups(d))
           or "<p class='ok'>Nothing to report on this data: no dead, mostly-dead, noisy or saturated "
              "filters and no gradient flag with the thresholds below.</p>")
        + "</section>",
        _layer_table(d),
        _gradient_section(d),
        _first_layer(d),
        _thresholds(d),
    ]  # fmt: skip
    return "\n".join(body)


# ------------------------------------------------------------------------------ sections
def _summary(d: Diagnosis) -> str:
    counts = {sev: sum(f.severity == sev for f in d.findings) for sev in ("high", "medium", "low")}
    badges = " ".join(
        f"<span class='count'><span class='sev {sev}'>{sev}</span>{n}</span>" for sev, n in counts.items()
    )
    notes = "".join(f"<p>{_e(n)}</p>" for n in d.notes)
    untrained = (
        f"<div class='untrained' id='untrained'><b>The weights look untrained:</b> {_e(d.untrained)}. "
        "At a random initialisation noisy first-layer filters and gradient flags are expected: the "
        "findings below describe the initialisation, not training. Load trained weights (--weights) "
        "to diagnose a trained model.</div>"
        if d.untrained
        else ""
    )
    n = len(_groups(d))
    rows = f" in {n} row(s)" if n < len(d.findings) else ""
    return (
        "<section id='summary'><h2>Summary</h2>"
        f"{untrained}<p>{len(d.findings)} finding(s){rows} {badges}</p>"
        f"<p>Gradient health: {_e(d.gradients)}.</p>{notes}"
        "<p>Every finding holds <b>on this data</b> only (except the filter roughness, which reads "
        "the weights alone): advice says what <i>may</i> be the cause.</p></section>"
    )


def _groups(d: Diagnosis) -> list[FindingGroup]:
    """The diagnosis' groups; for a Diagnosis built by hand without them, its findings grouped here."""
    if d.groups or not d.findings:
        return d.groups
    scope = f"on this data ({d.inputs:,} inputs of {d.data})"
    return group_findings(d.findings, {s.name: s.kind for s in d.layers}, scope=scope)


def _finding_box(group: FindingGroup, layers: dict[str, LayerSummary]) -> str:
    """A group of one is its finding; a larger one is its summary, every member in a folded list,
    and the pictures of its first (most serious, earliest) member."""
    first = group.findings[0]
    if len(group.findings) == 1:
        return _finding(first, layers.get(first.layer))
    items = "".join(f"<li><code>{_e(g.layer)}</code>: {_e(_member(g))}</li>" for g in group.findings)
    evidence = json.dumps({g.layer: g.evidence for g in group.findings}, indent=1, default=str)
    s = layers.get(first.layer)
    figs = _finding_pictures(first, s) if s is not None else ""
    shown = f"<p class='stats'>pictures: <code>{_e(first.layer)}</code>, the first of them</p>" if figs else ""
    return (
        f"<div class='finding {group.severity}' id='{_e(group.kind)}-{_e(first.layer)}'>"
        f"<h3><span class='sev {group.severity}'>{group.severity}</span>{_e(KIND_TITLE.get(group.kind, group.kind))} · "
        f"{len(group.layers)} {_e(group.layer_kind)} layers</h3><p>{_e(group.summary)}</p>"
        f"<p class='advice'>{_e(group.advice)}</p>"
        f"<details><summary>all {len(group.layers)} layers</summary><ul class='members'>{items}</ul></details>"
        f"<details><summary>evidence</summary><pre>{_e(evidence)}</pre></details>{shown}{figs}</div>"
    )


def _member(f: Finding) -> str:
    """A group member's own numbers, short (its full summary is in diagnosis.json)."""
    ev = f.evidence
    if f.kind == "update_ratio" and isinstance(ev.get("update_ratio"), float):
        return f"update ratio {ev['update_ratio']:.1e}"
    if f.kind.endswith("_gradient"):
        if "factor" not in ev:
            return "‖dL/dW‖ is NaN or Inf"
        return f"‖dL/dW‖/‖W‖ {_sci(ev.get('relative_grad'))}, {ev['factor']:.1e}× that of {ev.get('compared_with')}"
    if f.filters and "filters_in_layer" in ev:
        shown = ", ".join(f"#{i}" for i in f.filters[:6]) + (", …" if len(f.filters) > 6 else "")
        return f"{len(f.filters)} of {ev['filters_in_layer']} filters ({shown})"
    return f.summary


def _finding(f: Finding, layer: LayerSummary | None) -> str:
    evidence = json.dumps(f.evidence, indent=1, default=str)
    figs = _finding_pictures(f, layer) if layer is not None else ""
    return (
        f"<div class='finding {f.severity}' id='{_e(f.kind)}-{_e(f.layer)}'>"
        f"<h3><span class='sev {f.severity}'>{f.severity}</span>{_e(KIND_TITLE.get(f.kind, f.kind))} · "
        f"<code>{_e(f.layer)}</code></h3><p>{_e(f.summary)}</p><p class='advice'>{_e(f.advice)}</p>"
        f"<details><summary>evidence</summary><pre>{_e(evidence)}</pre></details>"
        f"{figs}</div>"
    )


def _finding_pictures(f: Finding, s: LayerSummary) -> str:
    """Offending filters in one row, healthy ones of the same layer in the next: W, a on the top
    input, mean a. The maps of both rows share one scale, so a weak filter looks weak."""
    if f.kind not in TAG or not f.filters:
        return ""
    flagged = list(f.filters[:SHOWN])
    healthy = _healthy(f, s)
    cut = f" (showing {len(flagged)} of {len(f.filters)})" if len(f.filters) > len(flagged) else ""
    groups = [(flagged, TAG[f.kind], f"flagged{cut}")]
    if healthy:
        groups.append((healthy, "ok", "healthy filters of the same layer, for comparison"))
    scales = {field: _scale(getattr(s, field), flagged + healthy) for field in ("top_map", "mean_map")}
    rows: list[str] = []
    for idx, tag, heading in groups:
        labels = [f"#{i} {tag}" for i in idx]
        figs: list[str] = []
        if s.weight is not None and s.weight.dim() in (2, 4) and _finite(s.weight[idx]):
            pic = filters(s.weight[idx], labels=labels, title=f"W · {s.name}")
            figs.append(_figure(pic.data_uri(), "W", "weights (each filter on its own scale)"))
        for field, caption in (
            ("top_map", "a on the input where the filter responds most"),
            ("mean_map", "a averaged over every input seen"),
        ):
            t = getattr(s, field)
            if t is None or t.dim() not in (1, 3):
                continue
            maps = t[idx]  # (K, H, W) or (K,)
            scale = scales[field]
            if scale is None:
                figs.append(f"<p class='warn'>{_e(caption)}: contains NaN/Inf — not drawn</p>")
                continue
            name = "a (top input)" if field == "top_map" else "mean a"
            if scale > 0:
                pic = grid(maps, labels=labels, norm="global", scale=scale, title=f"{name} · {s.name}")
            else:  # every map of both rows is 0
                pic = grid(maps, labels=labels, norm="layer", title=f"{name} · {s.name}")
            figs.append(_figure(pic.data_uri(), "a", caption))
        rows.append(f"<p class='stats'>{_e(heading)}</p><div class='figs'>{''.join(figs)}</div>")
    note = (
        "<p class='stats'>The maps of both rows share one scale, so a weak filter looks weak; a hatched "
        "map has the same value everywhere (a dead filter's: 0). Notes inside a picture number its "
        "cells from 0, left to right.</p>"
    )
    return note + "".join(rows)


def _scale(t: Tensor | None, idx: list[int]) -> float | None:
    """max |v| of the maps `idx` of t (None when t is missing or not finite)."""
    if t is None or t.dim() not in (1, 3):
        return 0.0
    maps = t[idx]
    if not _finite(maps):
        return None
    return float(maps.abs().max()) if maps.numel() else 0.0


def _healthy(f: Finding, s: LayerSummary) -> list[int]:
    """Up to HEALTHY filters of the same layer that are not flagged: the most active ones, or for
    roughness the smoothest."""
    flagged = set(f.filters)
    if f.kind == "noisy" and s.roughness is not None:
        rough = s.roughness
        order = sorted((i for i in range(s.filters) if i not in flagged and math.isfinite(rough[i])),
                       key=lambda i: rough[i])  # fmt: skip
    else:
        bad = flagged | set(s.dead) | set(s.mostly_dead)
        order = sorted((i for i in range(s.filters) if i not in bad and i < len(s.zero_fraction)),
                       key=lambda i: s.zero_fraction[i])  # fmt: skip
    return order[:HEALTHY]


def _layer_table(d: Diagnosis) -> str:
    head = (
        "<tr><th>layer</th><th>type</th><th>f</th><th>filters</th><th>inputs</th><th>dead</th>"
        "<th>mostly dead</th><th>zeros</th><th>roughness (median)</th><th>saturated</th>"
        "<th>‖dL/dW‖/‖W‖</th><th>update ratio</th></tr>"
    )
    rows = []
    for s in d.layers:
        counted = s.inputs > 0
        zeros = f"{100 * sum(s.zero_fraction) / len(s.zero_fraction):.0f}%" if s.zero_fraction else "—"
        rough = _median(s.roughness)
        sat = f"{100 * sum(s.saturated_fraction) / len(s.saturated_fraction):.0f}%" if s.saturated_fraction else "—"
        ratio = s.update_ratio
        bad_ratio = ratio is not None and not d.thresholds["update_ratio_low"] <= ratio <= d.thresholds["update_ratio_high"]
        rows.append(
            f"<tr><td>{_e(s.name)}</td><td>{_e(s.layer_type or s.kind)}</td><td>{_e(s.activation or '—')}</td>"
            f"<td>{s.filters}</td><td>{f'{s.inputs:,}' if counted else '—'}</td>"
            f"<td{_flag(bool(s.dead))}>{len(s.dead) if counted else '—'}</td>"
            f"<td{_flag(bool(s.mostly_dead))}>{len(s.mostly_dead) if counted else '—'}</td>"
            f"<td>{zeros}</td><td>{'—' if rough is None else f'{rough:.2f}'}</td><td>{sat}</td>"
            f"<td>{_sci(s.relative_grad)}</td><td{_flag(bad_ratio)}>{_sci(ratio)}</td></tr>"
        )
    return (
        "<section id='layers'><h2>Layers</h2><div class='scroll'><table class='layers'>" + head + "".join(rows)
        + "</table></div>"
        "<p class='stats'>dead = zero on every input; mostly dead = zero on at least "
        f"{d.thresholds['mostly_dead']:.0%} of them; zeros = share of all activation values that are 0; "
        "roughness 1 ≈ white noise, 0 = constant (deeper layers are shown, not flagged: their filters "
        "see feature maps, not pixels, and need not be smooth); f = the activation function "
        "(layers without one are counted for gradients only).</p></section>"
    )


def _gradient_section(d: Diagnosis) -> str:
    graded = [s for s in d.layers if s.update_ratio is not None]
    if not graded:
        return f"<section id='gradients'><h2>Gradient health</h2><p>{_e(d.gradients)}.</p></section>"
    lo, hi = d.thresholds["update_ratio_low"], d.thresholds["update_ratio_high"]
    typical = d.thresholds["typical_update_ratio"]
    width, row_h, left = 520, 22, 150
    height = row_h * len(graded) + 30

    def x(v: float) -> float:
        lv = min(max(math.log10(v), RATIO_LO), RATIO_HI) if v > 0 else RATIO_LO
        return left + (lv - RATIO_LO) / (RATIO_HI - RATIO_LO) * width

    parts = [
        f"<rect x='{x(lo):.1f}' y='0' width='{x(hi) - x(lo):.1f}' height='{height - 24}' fill='#dcfce7'/>",
        f"<line x1='{x(typical):.1f}' x2='{x(typical):.1f}' y1='0' y2='{height - 24}' stroke='#15803d' stroke-dasharray='3,2'/>",
    ]
    for e in range(RATIO_LO, RATIO_HI + 1):
        parts.append(f"<text x='{x(10.0**e):.1f}' y='{height - 8}' font-size='11' text-anchor='middle'>1e{e}</text>")
    for i, s in enumerate(graded):
        assert s.update_ratio is not None
        y = i * row_h + 4
        ok = lo <= s.update_ratio <= hi
        colour = "#2563eb" if ok else "#b91c1c"
        parts.append(f"<text x='{left - 8}' y='{y + 13}' font-size='12' text-anchor='end' font-family='monospace'>{_e(s.name)}</text>")
        parts.append(f"<rect x='{left}' y='{y + 3}' width='{x(s.update_ratio) - left:.1f}' height='12' fill='{colour}'/>")
        parts.append(f"<text x='{x(s.update_ratio) + 4:.1f}' y='{y + 13}' font-size='11' stroke='#fff' "
                     f"stroke-width='3' paint-order='stroke'>{_sci(s.update_ratio)}</text>")  # (over the guide line)
    full = left + width + 80  # drawn at this width, narrower in a narrow window (the viewBox scales it)
    svg = (
        f"<svg class='ratios' width='{full}' height='{height}' viewBox='0 0 {full} {height}' role='img' "
        f"aria-label='update to weight ratio per layer, log scale'>{''.join(parts)}</svg>"
    )
    lr = f"lr = {d.lr:g}" + (" — assumed, as no learning rate was given" if d.lr_assumed else "")
    return (
        "<section id='gradients'><h2>Gradient health</h2>"
        f"<p>{_e(d.gradients)}. Update ratio = lr·‖dL/dW‖/‖W‖ with {_e(lr)}: the size of one plain SGD "
        f"step relative to the weights (log scale; green band {lo:g} … {hi:g}, dashed line {typical:g}, "
        "CS231n's rule of thumb). With Adam or another adaptive optimiser the step is not lr·dL/dW.</p>"
        f"{svg}</section>"
    )


def _first_layer(d: Diagnosis) -> str:
    s = next((s for s in d.layers if s.roughness is not None), None)
    if s is None or s.weight is None or s.weight.dim() != 4 or not _finite(s.weight):
        return ""
    rough = s.roughness or []
    labels = [f"{i}: {r:.2f}" if math.isfinite(r) else f"{i}: -" for i, r in enumerate(rough)]
    figs = [_figure(filters(s.weight, labels=labels, title=f"W · {s.name} (label = filter: roughness)").data_uri(),
                    "W", "every first-layer filter with its roughness")]  # fmt: skip
    if s.mean_map is not None and s.mean_map.dim() == 3 and _finite(s.mean_map):
        pic = grid(s.mean_map, norm="layer", title=f"mean a · {s.name}")
        figs.append(_figure(pic.data_uri(), "a", "mean activation map of every filter over the data (one scale)"))
    return (
        f"<section id='first-layer'><h2>First layer: {_e(s.name)}</h2><p>Roughness = mean squared "
        "difference of neighbouring weights over twice their mean square: about 1 for white noise "
        f"(a random initialisation), 0 for a constant filter; noisy at ≥ {d.thresholds['noisy_roughness']:g}. "
        "With few weights per filter the score itself is noisy (a 1×3×3 white-noise filter scores "
        "below 0.8 about one time in four): trust the layer's median more than one filter's score.</p>"
        f"<div class='figs'>{''.join(figs)}</div></section>"
    )


def _thresholds(d: Diagnosis) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(k)}</code></td><td>{v:g}</td><td>{_e(THRESHOLD_TEXT.get(k, ''))}</td></tr>"
        for k, v in d.thresholds.items()
    )
    return (
        "<section id='thresholds'><h2>Thresholds used</h2><table class='gloss'>"
        f"<tr><th>name</th><th>value</th><th>meaning</th></tr>{rows}</table></section>"
    )


# ------------------------------------------------------------------------------ bits
def _figure(uri: str, symbol: str, caption: str) -> str:
    return (
        f"<figure><img src='{uri}' alt='{_e(symbol)}'><figcaption><b>{_e(symbol)}</b> — "
        f"{_e(caption)}</figcaption></figure>"
    )


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _median(vs: list[float] | None) -> float | None:
    finite = [v for v in vs or [] if math.isfinite(v)]
    return statistics.median(finite) if finite else None


def _sci(v: float | None) -> str:
    if v is None:
        return "—"
    return "inf" if math.isinf(v) else f"{v:.1e}"


def _flag(on: bool) -> str:
    return " class='flag'" if on else ""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


Diagnosis.display = diagnosis_html
