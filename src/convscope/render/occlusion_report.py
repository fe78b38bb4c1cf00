"""The occlusion report (`convscope occlusion`): ZF Fig. 7's panels as self-contained HTML, PNGs and JSON.

    write_occlusion_report(result, "occ/")   # occ/index.html, occ/occlusion.json, occ/png/*.png

Panels, as Zeiler & Fergus lay them out: (a) the image with the grey occluder drawn where it
hurts the class most; (b) the total activation of the layer's strongest feature map per
occluder position; (c) that map's deconvnet projection for the unoccluded image; (d) the
probability of the class per position (absolute 0–1 scale, and over the image); (e) the most
probable label per position, with a legend of class names. Each map cell is the occluder's
position: cell (i, j) = the square whose top-left corner is (rows[i], cols[j]). Opens offline
(pictures inlined, the reports' CSP, no script). Importing this module teaches
`OcclusionResult` to draw itself in Jupyter.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from convscope.analysis.occlusion import OcclusionResult

from .attribution import attribution
from .colormap import apply
from .grid import legend
from .html import picture_figure, write_report
from .overlay import overlay
from .picture import Box, Picture

SIZE = 224  # displayed side of every panel, pixels
#: label colours (Okabe–Ito, then Tableau): distinguishable, also for colour-blind readers
PALETTE = [
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000",
    "#999999", "#8c564b", "#17becf", "#bcbd22", "#9467bd", "#ff9896", "#98df8a", "#c5b0d5",
]  # fmt: skip
CSS = """
figure img.panel{width:224px;height:auto}.note{color:#555;font-size:12px;max-width:1100px}
.labels{list-style:none;padding:0;margin:4px 0;font-size:12px}.labels li{margin:2px 0}
.labels svg{vertical-align:middle;margin-right:6px}.stats td,.stats th{padding:1px 10px 1px 0;
text-align:left;font-size:12px}
"""


def _colour(i: int) -> tuple[int, int, int]:
    h = PALETTE[i % len(PALETTE)]
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def _blocks(rgb: npt.NDArray[np.uint8], size: int) -> Picture:
    """Nearest-neighbour upscale of a small (P, Q, 3) picture to about `size` pixels wide."""
    f = max(1, size // max(rgb.shape[:2]))
    big = np.ascontiguousarray(rgb.repeat(f, axis=0).repeat(f, axis=1))
    return Picture(big, cells=[Box(0, 0, big.shape[1], big.shape[0])])


def heat(values: npt.NDArray[np.float64], vmin: float, vmax: float, size: int = SIZE) -> Picture:
    """A (P, Q) map coloured on a fixed [vmin, vmax] scale (sequential), one block per position."""
    v01 = np.clip((values - vmin) / (vmax - vmin), 0.0, 1.0) if vmax > vmin else np.zeros_like(values)
    return _blocks(apply(v01, "sequential"), size)


def labels_picture(labels: npt.NDArray[np.int64], size: int = SIZE) -> Picture:
    """The (P, Q) label map, one palette colour per class."""
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    for k in np.unique(labels):
        rgb[labels == k] = _colour(int(k))
    return _blocks(rgb, size)


def occluded_image(r: OcclusionResult, size: int = SIZE) -> tuple[Picture, tuple[int, int]]:
    """The image with the grey square where the class probability is lowest; that (row, col)."""
    g = r.grid
    prob = g.probability.numpy()
    i, j = np.unravel_index(int(prob.argmin()), prob.shape)
    y, x = g.rows[int(i)], g.cols[int(j)]
    img = np.array(r.image)
    img[y : y + g.window, x : x + g.window] = 128  # grey = 0.5 in pixel space, as the occluder
    pic = _blocks(img, size)
    return pic, (y, x)


def _fig(pic: Picture, caption: str, name: str, png: Path | None, files: dict[str, str]) -> str:
    return picture_figure(pic, caption, name=name, png=png, files=files, css="panel")


def _swatch(i: int) -> str:
    return (
        "<svg width='12' height='12' aria-hidden='true'>"
        f"<rect width='12' height='12' fill='{PALETTE[i % len(PALETTE)]}'/></svg>"
    )


def panels(r: OcclusionResult) -> dict[str, tuple[Picture, str]]:
    """ZF Fig. 7's panels, in order: name → (picture, caption). Names: a-input, b-feature (with a
    layer), c-projection (with a layer), d-probability, d-overlay, e-labels. The report and the
    dashboard's occlusion answer (convscope.train.occlusion_live) draw the same pictures."""
    g = r.grid
    tname = r.classes[g.target]
    prob = g.probability.numpy().astype(np.float64)
    out: dict[str, tuple[Picture, str]] = {}
    occ_pic, (y, x) = occluded_image(r)
    out["a-input"] = (occ_pic, f"(a) the input, {g.window}×{g.window} grey occluder where p({tname}) is lowest (top-left y={y}, x={x})")
    if g.feature is not None:
        feat = g.feature.numpy().astype(np.float64)
        lo, hi = float(feat.min()), float(feat.max())
        out["b-feature"] = (heat(feat, min(lo, 0.0), hi), f"(b) total activation of map {g.channel} of {g.layer} (unoccluded: {g.clean_feature:.4g})")
    if g.projection is not None:
        out["c-projection"] = (attribution(g.projection, size=SIZE), f"(c) deconvnet projection of map {g.channel}'s strongest activation (unoccluded image)")
    out["d-probability"] = (heat(prob, 0.0, 1.0), f"(d) p({tname}) per occluder position, scale 0 (dark) – 1 (yellow); unoccluded: {g.clean_probability:.3f}")
    out["d-overlay"] = (_fit(overlay(r.image, prob, alpha=0.6)), f"(d′) (d) over the image, scaled to its own range {prob.min():.3f} (dark) – {prob.max():.3f} (bright), not (d)'s scale")
    out["e-labels"] = (labels_picture(g.label.numpy().astype(np.int64)), "(e) most probable label per occluder position")
    return out


def _sections(r: OcclusionResult, png: Path | None, files: dict[str, str]) -> str:
    g = r.grid
    tname = r.classes[g.target]
    prob = g.probability.numpy().astype(np.float64)
    labels = g.label.numpy().astype(np.int64)
    figs = [_fig(pic, caption, name, png, files) for name, (pic, caption) in panels(r).items()]
    shown = sorted({int(k) for k in np.unique(labels)} | {g.target})
    counts = {k: int((labels == k).sum()) for k in shown}
    legend_items = "".join(
        f"<li>{_swatch(k)}{html.escape(r.classes[k])}{' (the class in (d))' if k == g.target else ''}"
        f" — {counts[k]} of {labels.size} positions</li>"
        for k in shown
    )
    scale = picture_figure(  # at its own size: scaled down, its small text would blur
        legend(0.0, 1.0, signed=False, title="probability"), "colour scale of (d)", name="scale-d", png=png, files=files
    )
    if g.feature is not None:
        lo, hi = min(float(g.feature.min()), 0.0), float(g.feature.max())
        if hi > lo:
            bar = legend(lo, hi, signed=lo < 0, title="total activation")
            scale = picture_figure(bar, "colour scale of (b)", name="scale-b", png=png, files=files) + scale
    top = r.clean_probs.topk(min(3, r.clean_probs.shape[0]))
    preds = "; ".join(
        f"{html.escape(r.classes[int(t)])} {100 * float(p):.1f}%" for p, t in zip(top.values, top.indices, strict=True)
    )
    how = g.meta.get("method", "?")
    full_from = g.meta.get("full_tensors_from") or []
    how_text = f"{how} ({len(prob.flat)} positions, {g.meta.get('seconds', 0):.2f} s)"
    if how == "incremental" and full_from:
        how_text += f"; full tensors from node(s) {', '.join(full_from)} on (not restrictable there)"
    if "coarse_positions" in g.meta:  # the drill-down (analysis/occlusion/drilldown.py)
        how_text += (f"; drill-down computed {g.meta['coarse_positions']} coarse + {g.meta['fine_positions']} fine"
                     f" positions, the other {len(prob.flat) - g.meta['coarse_positions'] - g.meta['fine_positions']} interpolated")  # fmt: skip
    err = g.meta.get("approx_error")
    if isinstance(err, dict):
        how_text += (
            f"; APPROXIMATE: against the exact maps, max |Δp| = {err['max_abs_probability']:.4f},"
            f" top-10% region IoU = {err['top10_iou']:.2f}, labels agree at {100 * err['label_agreement']:.0f}%"
        )
    if "incremental" in g.meta:
        how_text += f"; incremental {g.meta['incremental']}"
    return (
        f"<section><h2>{html.escape(r.image_name)} → {html.escape(r.model)}</h2>"
        f"<p>unoccluded: {preds}</p>"
        f"<div class='figs'>{''.join(figs)}</div>"
        f"<ul class='labels'>{legend_items}</ul>"
        f"<div class='figs'>{scale}</div>"
        "<p class='note'>Zeiler &amp; Fergus 2013, Fig. 7: a grey square (0.5 in pixel space) slides"
        f" over the image in steps of {g.stride} pixels; each cell of (b), (d) and (e) is one position"
        f" of the square (cell (i, j): top-left corner at ({g.rows[0]} + {g.stride}i, {g.cols[0]} +"
        f" {g.stride}j)). Where (d) is dark, covering that part of the image lowers the probability of"
        f" {html.escape(tname)}: the model depends on it. (b) dark: covering there silences the"
        f" feature map. Layer tensor: {html.escape(str(g.meta.get('tensor', g.layer)))}.</p>"
        f"<p class='note'>computed by: {html.escape(how_text)}</p></section>"
    )


def _fit(pic: Picture) -> Picture:
    return _blocks(np.ascontiguousarray(pic.array), SIZE)


def occlusion_html(r: OcclusionResult) -> str:
    """An HTML fragment (Jupyter): the panels, pictures inlined."""
    return f"<div>{_sections(r, None, {})}</div>"


def write_occlusion_report(r: OcclusionResult, out_dir: str | Path) -> Path:
    """Write `index.html`, `occlusion.json` and `png/*.png` into `out_dir`; return the HTML path."""
    g = r.grid
    header = (
        f"<p>{html.escape(r.model)} · layer {html.escape(str(g.layer))} · {html.escape(r.image_name)}"
        f" · window {g.window} stride {g.stride}</p>"
    )
    return write_report(
        out_dir,
        title=f"convscope occlusion — {r.model}",
        header=header,
        css=CSS,
        body=lambda png, files: _sections(r, png, files),
        json_name="occlusion.json",
        summary=lambda files: _summary(r, files),
    )


def _summary(r: OcclusionResult, files: dict[str, str]) -> dict[str, Any]:
    g = r.grid
    return {
        "model": r.model,
        "image": r.image_name,
        "layer": g.layer,
        "layer_tensor": g.meta.get("tensor"),
        "channel": g.channel,
        "target": g.target,
        "target_name": r.classes[g.target],
        "window": g.window,
        "stride": g.stride,
        "baseline": g.baseline.tolist(),
        "rows": g.rows,
        "cols": g.cols,
        "clean_probability": g.clean_probability,
        "clean_feature": g.clean_feature,
        "feature": None if g.feature is None else g.feature.tolist(),
        "probability": g.probability.tolist(),
        "label": g.label.tolist(),
        "classes": r.classes,
        "meta": {k: v for k, v in g.meta.items() if isinstance(v, str | int | float | list | dict)},
        "files": files,
        "seconds": {k: round(v, 4) for k, v in r.seconds.items()},
    }





OcclusionResult.display = occlusion_html
