"""The units report (`convscope units`): ZF 2013 Fig. 2 for any model — self-contained HTML, PNGs, JSON.

    write_units_report(result, "units/")   # units/index.html, units/units.json, units/png/*.png

Per layer, per feature map: its k strongest dataset patches (the input under the unit's receptive
field, 3×3 for k = 9) beside their deconvnet projections cropped to the same boxes, and the map's
optimal stimulus when computed. A patch clipped by the image border sits in its field's square
where it would be (the rest grey), so every cell shows the field at one scale. Opens offline.
Importing this module teaches `Units` to draw itself in Jupyter.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .html import picture_figure, write_report
from .picture import Box, Picture

GREY = 0.5
CELL_MIN = 36  # px: small fields are scaled up by whole pixels to at least this
GAP = 2

CSS = """
.maps{display:flex;flex-wrap:wrap;gap:18px}.map{border:1px solid #e5e7eb;border-radius:4px;padding:6px}
.map h3{font:600 12px ui-monospace,monospace;margin:0 0 4px}.map .figs{gap:8px}
figure img.mosaic{image-rendering:pixelated}.note{color:#555;font-size:12px}.warn{color:#a00;font-size:12px;max-width:16em}
"""


def _rgb(chw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(C, h, w) → (h, w, 3)."""
    hwc = chw.transpose(1, 2, 0)
    return np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc[:, :, :3]


def _signed01(chw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """A projection on the report's scale: 0.5 + 0.5·v / max|v| (grey = 0), per projection."""
    peak = float(np.abs(chw).max()) if chw.size else 0.0
    return 0.5 + 0.5 * chw / peak if peak > 0 else np.full_like(chw, GREY)


def mosaic(
    crops: list[Any],
    boxes: list[tuple[int, int, int, int]],
    positions: list[tuple[int, int]],
    field: dict[str, Any],
    *,
    signed: bool,
) -> Picture:
    """Crops (C, h, w) in a near-square grid of field-sized cells (k = 9 → 3×3)."""
    fh, fw = (int(v) for v in field["size"])
    jh, jw = (int(v) for v in field["jump"])
    sh, sw = (float(v) for v in field["start"])
    n = max(len(crops), 1)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    f = max(1, -(-CELL_MIN // max(fh, fw)))  # integer upscale
    ch, cw = fh * f, fw * f
    out = np.ones((rows * ch + (rows - 1) * GAP, cols * cw + (cols - 1) * GAP, 3))
    cells = []
    for idx, (crop, (y0, x0, _, _), (i, j)) in enumerate(zip(crops, boxes, positions, strict=True)):
        arr = np.asarray(crop.detach().cpu().numpy() if hasattr(crop, "detach") else crop, dtype=np.float64)
        v = _signed01(arr) if signed else np.clip(arr, 0, 1)
        cell = np.full((fh, fw, 3), GREY)
        oy = y0 - (int(sh - (fh - 1) / 2) + i * jh)  # where the clipped crop sits in its field
        ox = x0 - (int(sw - (fw - 1) / 2) + j * jw)
        rgb = _rgb(v)
        cell[oy : oy + rgb.shape[0], ox : ox + rgb.shape[1]] = rgb[: fh - oy, : fw - ox]
        r, c = divmod(idx, cols)
        y, x = r * (ch + GAP), c * (cw + GAP)
        out[y : y + ch, x : x + cw] = cell.repeat(f, axis=0).repeat(f, axis=1)
        cells.append(Box(x, y, cw, ch))
    return Picture(np.rint(out * 255).astype(np.uint8), cells=cells)


def stimulus_picture(chw: Any, side: int) -> Picture:
    arr = np.clip(np.asarray(chw.detach().cpu().numpy(), dtype=np.float64), 0, 1)
    rgb = _rgb(arr)
    f = max(1, -(-side // max(rgb.shape[:2])))
    big = np.rint(rgb.repeat(f, axis=0).repeat(f, axis=1) * 255).astype(np.uint8)
    return Picture(big, cells=[Box(0, 0, big.shape[1], big.shape[0])])


def _fig(pic: Picture, caption: str, name: str, png: Path | None, files: dict[str, str]) -> str:
    return picture_figure(pic, caption, name=name, png=png, files=files, css="mosaic")


def _sections(u: Any, png: Path | None, files: dict[str, str]) -> str:
    parts = [
        f"<section><h2>{html.escape(u.model)} over {html.escape(u.data)}</h2><p class='note'>"
        f"{u.inputs:,} images. For each feature map, its {u.k} strongest images (one position per image:"
        " its maximum; then the top images, ties to the lower index), each as the input under the unit's"
        " receptive field, beside its deconvnet projection (Zeiler &amp; Fergus) cropped to the same box"
        " — grey = 0 in a projection, and grey where a field reaches past the image border."
        + (" The optimal stimulus maximises the map's mean activation (Olah et al. 2017)." if _any_stimulus(u) else "")
        + "</p></section>"
    ]
    for layer, hits in u.layers.items():
        fld = u.fields[layer]
        cards = []
        for h in hits:
            slug = f"{_slug(layer)}-{h.channel}"
            patches = mosaic(h.patches, h.boxes, h.positions, fld, signed=False)
            projs = mosaic(h.projections, h.boxes, h.positions, fld, signed=True)
            figs = [
                _fig(patches, f"top-{len(h.values)} patches", f"{slug}-patches", png, files),
                _fig(projs, "their deconvnet projections", f"{slug}-projections", png, files),
            ]
            if h.stimulus is not None:
                pic = stimulus_picture(h.stimulus, patches.height)
                act = "" if h.stimulus_activation is None else f" (mean a = {h.stimulus_activation:.3g})"
                figs.append(_fig(pic, f"optimal stimulus{act}", f"{slug}-stimulus", png, files))
                warn = stimulus_warning(h)
                if warn:
                    figs.append(f"<p class='warn'>{html.escape(warn)}</p>")
            cards.append(
                f"<div class='map'><h3>map {h.channel}: top a = {h.values[0]:.4g}, image #{h.indices[0]}</h3>"
                f"<div class='figs'>{''.join(figs)}</div></div>"
            )
        parts.append(
            f"<section><h2>{html.escape(layer)}</h2><p class='note'>receptive field {fld['size'][0]}×{fld['size'][1]} px,"
            f" jump {fld['jump'][0]} px; the {len(hits)} maps with the strongest top activation.</p>"
            f"<div class='maps'>{''.join(cards)}</div></section>"
        )
    return "\n".join(parts)


def _best_image(h: Any) -> float | None:
    """The map's largest mean activation over the dataset's images, when the job measured it
    (`best_image_activation` on the unit; the top values are single-position maxima, not means)."""
    v = getattr(h, "best_image_activation", None)
    return None if v is None else float(v)


def stimulus_warning(h: Any) -> str | None:
    """One line when the optimal stimulus reaches less mean activation than the best dataset
    image (the optimiser failed on this map); None otherwise or when either is unknown."""
    best, got = _best_image(h), getattr(h, "stimulus_activation", None)
    if getattr(h, "stimulus", None) is None or best is None or got is None or got >= best:
        return None
    return (
        f"not optimal: this stimulus reaches mean a = {got:.3g}, below the best dataset image's"
        f" {best:.3g} — the optimiser did not find this map's optimum"
    )


def _any_stimulus(u: Any) -> bool:
    return any(h.stimulus is not None for hits in u.layers.values() for h in hits)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def units_html(u: Any) -> str:
    """An HTML fragment (Jupyter): every layer's maps, pictures inlined."""
    return f"<div>{_sections(u, None, {})}</div>"


def write_units_report(u: Any, out_dir: str | Path) -> Path:
    """Write `index.html`, `units.json` and `png/*.png` into `out_dir`; return the HTML path."""
    header = f"<p>{html.escape(u.model)} · {html.escape(u.data)} · layers {html.escape(', '.join(u.layers))}</p>"
    return write_report(
        out_dir,
        title=f"convscope units — {u.model}",
        header=header,
        css=CSS,
        body=lambda png, files: _sections(u, png, files),
        json_name="units.json",
        summary=lambda files: _summary(u, files),
    )


def _summary(u: Any, files: dict[str, str]) -> dict[str, Any]:
    return {
        "model": u.model,
        "data": u.data,
        "inputs": u.inputs,
        "k": u.k,
        "fields": u.fields,
        "layers": {
            layer: [
                {
                    "channel": h.channel,
                    "hits": [
                        {"value": v, "index": i, "position": list(p), "box": list(b)}
                        for v, i, p, b in zip(h.values, h.indices, h.positions, h.boxes, strict=True)
                    ],
                    "stimulus_activation": h.stimulus_activation,
                    "best_image_activation": _best_image(h),
                    "stimulus_warning": stimulus_warning(h),
                    "pictures": {
                        kind: files.get(f"{_slug(layer)}-{h.channel}-{kind}")
                        for kind in ("patches", "projections", "stimulus")
                    },
                }
                for h in hits
            ]
            for layer, hits in u.layers.items()
        },
        "seconds": {k: round(v, 3) for k, v in u.seconds.items()},
    }
