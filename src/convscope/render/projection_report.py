"""The projections report (`convscope project`): self-contained HTML, PNGs and JSON.

    write_projection_report(result, "proj/")   # proj/index.html, proj/projections.json, proj/png/*.png

Two sections, as the papers lay them out: the layer's strongest units, each as its feature map
beside its strongest activation's projection by every layer method (Zeiler & Fergus Fig. 1/2);
then every class method side by side for the top-3 classes. Opens offline (pictures inlined,
the reports' CSP, no script). Importing this module teaches `Projection` to draw itself in Jupyter.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from convscope.analysis.attribution import Projection

from .attribution import _upscale, attribution, style_of
from .grid import grid
from .html import picture_figure, write_report
from .picture import Picture

TITLES = {
    "deconvnet": "deconvnet (ZF)",
    "guided": "guided backprop",
    "saliency": "saliency |∂/∂x|",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "guided-gradcam": "Guided Grad-CAM",
}
STYLE_NOTES = {
    "rgb": "grey = 0; colour = which input channel the signal favours",
    "magnitude": "max over channels of |value|; dark = 0",
    "heat": "heat over the image; dark/transparent = 0",
}
CSS = """
.unit{border-top:1px solid #e5e7eb;padding:8px 0}.unit:first-of-type{border-top:0}
.unit h3,.cls h3{font-size:13px;margin:0 0 6px;font-family:ui-monospace,monospace}
.cls{border-top:1px solid #e5e7eb;padding:8px 0}figure img.proj{width:128px;height:128px;object-fit:contain;background:#f3f4f6}
.rules td,.rules th{border:1px solid #e5e7eb;padding:3px 8px;text-align:left;font-size:12px}
.rules{border-collapse:collapse}.note{color:#555;font-size:12px}
"""


def _fig(pic: Picture, caption: str, name: str, png: Path | None, files: dict[str, str]) -> str:
    return picture_figure(pic, caption, name=name, png=png, files=files, css="proj")


def _sections(p: Projection, png: Path | None, files: dict[str, str]) -> str:
    parts: list[str] = []
    layer_methods = [m for m in p.methods if any(m in u.projections for u in p.units)]
    image_pic = attribution_image(p)
    header = (
        f"<section><h2>{html.escape(p.image_name)} → {html.escape(p.model)}</h2><div class='figs'>"
        + _fig(image_pic, f"the input ({p.image.shape[1]}×{p.image.shape[0]})", "input", png, files)
        + "</div><p>"
        + "; ".join(
            f"{html.escape(c.name)} {100 * c.probability:.1f}%" for c in p.classes
        )
        + "</p></section>"
    )
    parts.append(header)
    if p.units:
        units = [
            f"<section><h2>units of {html.escape(p.layer)}</h2>"
            f"<p class='note'>The {len(p.units)} feature maps of {html.escape(p.layer)} that fire most on"
            f" this image ({html.escape(p.layer_tensor)}). For each, its strongest activation is projected"
            " back to pixels with every other activation of the layer set to zero (Zeiler &amp; Fergus)."
            f" Projections: {html.escape(STYLE_NOTES['rgb'])}.</p>"
        ]
        for u in p.units:
            where = f" at (i, j) = {u.position}" if u.position is not None else ""
            figs = []
            if p.maps.dim() == 3:
                fmap = grid(p.maps[u.channel : u.channel + 1], labels=False, signed=False)
                figs.append(_fig(fmap, f"a[{u.channel}]: its feature map", f"unit{u.channel}-map", png, files))
            if u.box is not None:  # zoomed to the unit's receptive field, as ZF show projections
                y0, x0, y1, x1 = u.box
                patch = _upscale(np.ascontiguousarray(p.image[y0:y1, x0:x1]), 128)
                figs.append(_fig(patch, f"input under its field ({y1 - y0}×{x1 - x0})", f"unit{u.channel}-patch", png, files))
            for m in layer_methods:
                amap = u.projections[m]
                if u.box is not None:
                    y0, x0, y1, x1 = u.box
                    crop = amap.as_subclass(Tensor)[:, :, y0:y1, x0:x1]
                    pic = attribution(crop, style=style_of(amap.meta, int(amap.shape[1])))
                else:
                    pic = attribution(amap, image=p.image)
                figs.append(_fig(pic, TITLES[m], f"unit{u.channel}-{m}", png, files))
            units.append(
                f"<div class='unit'><h3>map {u.channel}: max a = {u.value:.4g}{where}</h3>"
                f"<div class='figs'>{''.join(figs)}</div></div>"
            )
        units.append("</section>")
        parts.append("".join(units))
    if p.classes:
        cls = [
            "<section><h2>what each class score depends on</h2>"
            f"<p class='note'>Every class method for the top-{len(p.classes)} classes. Grad-CAM and"
            f" Guided Grad-CAM use {html.escape(p.layer)}. Guided backprop, deconvnet and Guided"
            f" Grad-CAM: {STYLE_NOTES['rgb']}. Saliency and SmoothGrad: {STYLE_NOTES['magnitude']}."
            f" Grad-CAM: {STYLE_NOTES['heat']}.</p>"
        ]
        for c in p.classes:
            figs = []
            for m, amap in c.maps.items():
                figs.append(
                    _fig(
                        attribution(amap, image=p.image),
                        TITLES[m],
                        f"class{c.target}-{m}",
                        png,
                        files,
                    )
                )
            cls.append(
                f"<div class='cls'><h3>class {c.target} {html.escape(c.name)}: {100 * c.probability:.1f}%</h3>"
                f"<div class='figs'>{''.join(figs)}</div></div>"
            )
        cls.append("</section>")
        parts.append("".join(cls))
    rows = "".join(
        f"<tr><th>{html.escape(TITLES[m])}</th><td>"
        + (html.escape(", ".join(f"{k}: {v}" for k, v in r.items())) or "—")
        + "</td></tr>"
        for m, r in p.rules.items()
    )
    parts.append(
        "<section><h2>rules at the activations</h2><table class='rules'>"
        f"<tr><th>method</th><th>what passed backwards through each activation (g = dL/da)</th></tr>{rows}"
        "</table></section>"
    )
    return "\n".join(parts)


def attribution_image(p: Projection) -> Picture:
    """The input image as fed, scaled up like the maps."""
    return _upscale(np.ascontiguousarray(p.image), 128)


def projection_html(p: Projection) -> str:
    """An HTML fragment (Jupyter): both sections, pictures inlined."""
    return f"<div>{_sections(p, None, {})}</div>"


def write_projection_report(p: Projection, out_dir: str | Path) -> Path:
    """Write `index.html`, `projections.json` and `png/*.png` into `out_dir`; return the HTML path."""
    header = (
        f"<p>{html.escape(p.model)} · layer {html.escape(p.layer)} · {html.escape(p.image_name)}</p>"
    )
    return write_report(
        out_dir,
        title=f"convscope project — {p.model}",
        header=header,
        css=CSS,
        body=lambda png, files: _sections(p, png, files),
        json_name="projections.json",
        summary=lambda files: _summary(p, files),
    )


def _summary(p: Projection, files: dict[str, str]) -> dict[str, Any]:
    return {
        "model": p.model,
        "image": p.image_name,
        "layer": p.layer,
        "layer_tensor": p.layer_tensor,
        "methods": p.methods,
        "units": [
            {
                "channel": u.channel,
                "value": u.value,
                "position": list(u.position) if u.position is not None else None,
                "box": list(u.box) if u.box is not None else None,
                "projections": {m: files.get(f"unit{u.channel}-{m}") for m in u.projections},
            }
            for u in p.units
        ],
        "classes": [
            {
                "target": c.target,
                "name": c.name,
                "probability": c.probability,
                "maps": {m: files.get(f"class{c.target}-{m}") for m in c.maps},
            }
            for c in p.classes
        ],
        "rules": p.rules,
        "seconds": {k: round(v, 4) for k, v in p.seconds.items()},
    }


Projection.display = projection_html
