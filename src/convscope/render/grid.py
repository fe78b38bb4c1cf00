"""Grids of maps, pictures of filters, and colour bars -- the pictures convscope shows.

  grid(a)          activation maps (B, C, H, W) / (C, H, W) / (H, W), or a dense vector (F,) /
                   (B, F) with dense=True, one cell per channel or unit, labelled with its index
  filters(W)       conv weights (C_out, C_in, k, k): one colour picture per filter when C_in == 3,
                   else one row per filter and one cell per input slice; dense (out, in) -> heat matrix
  legend(lo, hi)   the colour bar for a picture, with min / 0 / max labels

Truth rules: signed data (any value < 0) uses the diverging map with 0 at its centre colour,
unsigned data the sequential map with 0 at its darkest colour; small maps are scaled up by an
integer factor (each value a uniform square block, never blurred); a constant map is drawn flat
under a magenta hatch and border (colormap.MARKER, a colour no table contains); NaN/Inf raise.
Every picture's `cells` gives the box of each drawn map, in channel order.

    grid(trace["conv1"].a).save("a.png")
    filters(model.conv1.weight)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from .colormap import Name, apply, mark_constant
from .normalize import Floats, Mode, Normalized, as_array, normalize
from .picture import RGB, Box, Picture

CELL = 48  # maps are scaled up by an integer factor to at least this many px (long side)
FILTER_CELL = 24  # the same for one input slice of a deep filter (rows of C_in slices)
DENSE_CELL = 24  # px per unit of a dense vector
HEAT_SIDE = 256  # a dense weight matrix is scaled up (integer factor) towards this long side,
#               or until its short side reaches CELL, whichever is more (at most 32x)
HEAT_MAX = 1024  # ... and box-averaged down to this long side when larger (the note says so)
HEAT_ROW = 12  # px per row (column) of a very wide (tall) matrix, whose short side would be thin:
#               it is scaled more along its short side, up to HEAT_MAX // 2 px and half the long
#               side (the note then gives both scales)
NOTE_W = 320  # px: notes wider than this and than the grid wrap onto more lines
GAP = 4  # px between neighbouring cells
MARGIN = 6  # px around the whole picture
LABEL_PX = 12  # font size of cell labels and notes
TITLE_PX = 14  # font size of the title
BACKGROUND: RGB = (255, 255, 255)
FRAME: RGB = (150, 150, 150)  # 1-px frame around each cell, outside it
INK: RGB = (20, 20, 20)

Labels = bool | Sequence[str]
Uint8s = npt.NDArray[np.uint8]

GRID_SHAPES = "(B, C, H, W), (C, H, W), (H, W), (F,), or (B, F) with dense=True"
FILTER_SHAPES = "conv weights (C_out, C_in, kH, kW) or dense weights (out, in)"


# ---------------------------------------------------------------- public API


def grid(
    t: npt.ArrayLike,
    *,
    signed: bool | None = None,
    norm: Mode = "map",
    scale: float | None = None,
    sample: int = 0,
    labels: Labels = True,
    cell: int | None = None,
    cols: int | None = None,
    title: str | None = None,
    dense: bool = False,
) -> Picture:
    """One cell per map (channel) or per unit, laid out row by row; see the module docstring.

    signed: None = signed when any value < 0.  norm: "map" | "layer" | "global" (needs scale).
    sample: which item of a batch.  cell: px of a cell's long side (default: >= 48, crisp
    integer scaling; smaller than the map = box-averaged).  labels: channel indices, your own
    strings, or False (also drops the note line under the grid).  dense: a 2-D input is
    (B, F), a batch of dense vectors, rather than one (H, W) map.  1x1 maps (after global
    pooling) are drawn as a dense vector: one scale for all of them.
    """
    if not hasattr(t, "shape"):
        t = np.asarray(t)
    shape = tuple(int(d) for d in t.shape)
    if len(shape) == 4 or (len(shape) == 2 and dense):
        if not 0 <= sample < shape[0]:
            raise ValueError(
                f"sample={sample} is out of range for a batch of {shape[0]} (shape {shape})"
            )
        x = t[sample]  # type: ignore[index]
    elif len(shape) in (1, 3):
        x = t
    elif len(shape) == 2:
        x = t[None]  # type: ignore[index]  # one (H, W) map -> (1, H, W)
    else:
        raise ValueError(f"grid accepts {GRID_SHAPES}; got shape {shape} ({len(shape)} dims)")
    arr = as_array(x, what="grid input")
    if arr.ndim == 3 and arr.shape[1:] == (1, 1):
        arr = arr.reshape(-1)  # (C, 1, 1) -> (C,): each map is one number
    if signed is None:
        signed = bool((arr < 0).any())

    if arr.ndim == 1:  # dense: the vector is one map, drawn one cell per unit
        n = normalize(arr[None], mode=norm, signed=signed, scale=scale)  # one map: "map" == "layer"
        count = arr.shape[0]
        values = n.values.reshape(count, 1, 1)
        constant = np.repeat(n.constant, count)
        default, wide = DENSE_CELL, 16
    else:
        n = normalize(arr, mode=norm, signed=signed, scale=scale)
        count, values, constant = arr.shape[0], n.values, n.constant
        default, wide = CELL, 8

    side = max(values.shape[1:])
    if cell is not None and cell < side:
        values = _shrink(values, cell)
    rgb = _blocks(apply(values, _cmap(signed)), _factor(max(values.shape[1:]), cell, default))
    for i in np.flatnonzero(constant):
        mark_constant(rgb[i])

    names = _cell_labels(labels, count)
    notes = [] if labels is False else _notes(n, arr.ndim == 1, what="map", names=names)
    return _sheet(
        rgb,
        cols=_default_cols(count, wide) if cols is None else cols,
        labels=names,
        title=title,
        notes=notes,
    )


def filters(
    weight: npt.ArrayLike,
    *,
    signed: bool = True,
    norm: Mode = "map",
    scale: float | None = None,
    labels: Labels = True,
    max_in: int = 16,
    max_out: int = 96,
    cell: int | None = None,
    cols: int | None = None,
    title: str | None = None,
) -> Picture:
    """Pictures of filters W (or of dL/dW: same layout); see the module docstring.

    C_in == 3: one colour image per filter, its R, G, B kernels as the picture's channels,
    0 -> mid-grey (128); norm "map" scales each filter by its own max |w|.
    Otherwise: one row per output filter (at most max_out), one cell per input slice (at most
    max_in), diverging colours around 0; norm "map" scales each filter (row) by its own max |w|.
    Dense (out, in): one heat matrix, rows = outputs; norm "map"/"layer" both mean the matrix.
    """
    arr = as_array(weight, what="filters input")
    if max_in < 1 or max_out < 1:
        raise ValueError(f"max_in and max_out must be >= 1; got {max_in}, {max_out}")
    if arr.ndim == 2:
        return _heat_matrix(
            arr,
            signed=signed,
            norm=norm,
            scale=scale,
            cell=cell,
            title=title,
            notes=labels is not False,
        )
    if arr.ndim != 4:
        raise ValueError(
            f"filters accepts {FILTER_SHAPES}; got shape {arr.shape} ({arr.ndim} dims)"
        )

    c_out, c_in, kh, kw = arr.shape
    n = normalize(arr, mode=norm, signed=signed, scale=scale)  # per output filter
    n_out, n_in = min(c_out, max_out), min(c_in, max_in)
    cut = [f"filters 0-{n_out - 1} of {c_out}"] if n_out < c_out else []
    every = _cell_labels(labels, c_out)  # one per filter, of all c_out
    names = None if every is None else every[:n_out]
    colour = c_in == 3  # a colour picture of each filter, like first-layer filter figures
    rgb_meaning = "grey = 0, a channel brighter where > 0" if signed else "black = 0"
    notes = (
        []
        if labels is False
        else _notes(n, False, what="filter", colours=rgb_meaning if colour else None, names=every)
    )

    if colour:
        rgb = np.rint(n.values[:n_out].transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        rgb = _blocks(rgb, _factor(max(kh, kw), cell, CELL))  # (O, kH*f, kW*f, 3)
        for i in np.flatnonzero(n.constant[:n_out]):
            mark_constant(rgb[i])
        head = f"filters {c_out}x{c_in}x{kh}x{kw} as RGB pictures"
        return _sheet(
            rgb,
            cols=_default_cols(n_out, 8) if cols is None else cols,
            labels=names,
            title=_title(title, head, cut),
            notes=notes,
        )

    if n_in < c_in:
        cut.append(f"inputs 0-{n_in - 1} of {c_in}")
    values = n.values[:n_out, :n_in].reshape(n_out * n_in, kh, kw)  # row-major: filter, then input
    rgb = _blocks(apply(values, _cmap(signed)), _factor(max(kh, kw), cell, FILTER_CELL))
    for o in np.flatnonzero(n.constant[:n_out]):
        for j in range(n_in):
            mark_constant(rgb[o * n_in + j])
    head = f"filters {c_out}x{c_in}x{kh}x{kw}: a row per filter, a column per input channel"
    return _sheet(
        rgb,
        cols=n_in,
        labels=None,
        row_labels=names,
        col_labels=None if names is None else [f"in {i}" for i in range(n_in)],
        title=_title(title, head, cut),
        notes=notes,
    )


def legend(
    vmin: float,
    vmax: float,
    *,
    signed: bool,
    width: int = 256,
    height: int = 14,
    title: str | None = None,
) -> Picture:
    """A colour bar from vmin to vmax, coloured exactly as `normalize` + `grid` colour them.

    Signed: colour = diverging(0.5 + 0.5 v / max(|vmin|, |vmax|)), with a "0" tick at the centre
    colour. Unsigned (0 <= vmin): colour = sequential(v / vmax). `cells[0]` is the bar.
    """
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmin >= vmax:
        raise ValueError(f"legend needs finite vmin < vmax; got vmin={vmin!r}, vmax={vmax!r}")
    if not signed and vmin < 0:
        raise ValueError(
            f"an unsigned legend starts at 0 or above; got vmin={vmin!r} (use signed=True)"
        )
    if width < 16 or height < 2:
        raise ValueError(f"legend needs width >= 16 and height >= 2; got {width}, {height}")
    v = np.linspace(vmin, vmax, width)  # the value each column stands for
    m = max(abs(vmin), abs(vmax))
    rgb = apply(0.5 + 0.5 * v / m if signed else v / vmax, _cmap(signed))  # (width, 3)
    bar = np.broadcast_to(rgb, (height, width, 3))

    font = _font(LABEL_PX)
    ticks = [(0, _fmt(vmin), "left"), (width - 1, _fmt(vmax), "right")]
    if vmin < 0 < vmax:
        ticks.append((round(-vmin / (vmax - vmin) * (width - 1)), "0", "center"))
    title = _plain(title) if title else None
    title_h = TITLE_PX + 6 if title else 0
    left = MARGIN + 1
    top = MARGIN + title_h + 1
    text_y = top + height + 5
    total_w = max(width + 2 * left, _text_w(title or "", TITLE_PX) + 2 * MARGIN)
    canvas = np.empty((text_y + LABEL_PX + 3 + MARGIN, total_w, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    canvas[top : top + height, left : left + width] = bar
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    draw.rectangle((left - 1, top - 1, left + width, top + height), outline=FRAME)
    if title:
        draw.text((MARGIN, MARGIN), title, font=_font(TITLE_PX), fill=INK)
    for x, text, align in ticks:
        draw.line((left + x, top + height, left + x, top + height + 3), fill=INK)
        tw = font.getlength(text)
        tx = {"left": left + x, "right": left + x + 1 - tw, "center": left + x - tw / 2}[align]
        draw.text((tx, text_y), text, font=font, fill=INK)
    return Picture(np.asarray(img), cells=[Box(left, top, width, height)])


# ---------------------------------------------------------------- drawing pieces


def _cmap(signed: bool) -> Name:
    return "diverging" if signed else "sequential"


def _factor(side: int, cell: int | None, default: int) -> int:
    """Integer upscale so the long side reaches `default` (at least) or fits `cell` (at most)."""
    if cell is not None:
        if cell < 1:
            raise ValueError(f"cell must be >= 1 px, got {cell}")
        return max(1, cell // side)
    return max(1, -(-default // side))


def _blocks(rgb: Uint8s, factor: int) -> Uint8s:
    """Scale (N, h, w, 3) up by an integer factor: each pixel becomes a factor x factor block."""
    return np.ascontiguousarray(rgb.repeat(factor, axis=1).repeat(factor, axis=2))


def _shrink(values: Floats, cell: int) -> Floats:
    """Box-average maps (N, H, W) so their long side is `cell` px (done on values, not colours)."""
    _, h, w = values.shape
    size = (max(1, round(w * cell / max(h, w))), max(1, round(h * cell / max(h, w))))  # (w, h)
    out = [
        np.asarray(Image.fromarray(m.astype(np.float32)).resize(size, Image.Resampling.BOX))
        for m in values
    ]
    return np.clip(np.stack(out).astype(np.float64), 0.0, 1.0)


def _shrink_to(values: Floats, h: int, w: int) -> Floats:
    """Box-average maps (N, H, W) to (N, h, w) (done on values, not colours)."""
    out = [
        np.asarray(Image.fromarray(m.astype(np.float32)).resize((w, h), Image.Resampling.BOX))
        for m in values
    ]
    return np.clip(np.stack(out).astype(np.float64), 0.0, 1.0)


def _default_cols(count: int, wide: int) -> int:
    """One row up to `wide` cells, then a near-square grid."""
    return count if count <= wide else math.ceil(math.sqrt(count))


def _cell_labels(labels: Labels, count: int) -> list[str] | None:
    if labels is True:
        return [str(i) for i in range(count)]
    if labels is False:
        return None
    if isinstance(labels, str) or len(labels) != count:
        got = "a single string" if isinstance(labels, str) else f"{len(labels)} labels"
        raise ValueError(
            f"labels must be True, False or a list of {count} strings (one per cell); got {got}"
        )
    return [str(s) for s in labels]


def _fmt(v: float) -> str:
    return "0" if v == 0 else f"{v:.3g}"


def _notes(
    n: Normalized, one_map: bool, *, what: str, colours: str | None = None, names: list[str] | None = None
) -> list[str]:
    """What the colours mean and what is special, in one or two short lines. A constant map or
    filter is named by its cell's label (`names`, one per position: a caller that shows a subset
    or a reordering labels each cell with its own index), else by its position."""
    if colours is None:
        colours = "blue < 0, white = 0, red > 0" if n.signed else "dark = 0, bright = max"
    shared = bool(np.all(n.vmax == n.vmax[0]))
    if shared:
        scale = f"range {_fmt(float(n.vmin[0]))} ... {_fmt(float(n.vmax[0]))}"
    else:
        scale = f"each {what} scaled to its own max{' abs value' if n.signed else ''}"
    notes = [f"{colours}; {scale}"]
    if n.constant.any() and not one_map:
        idx = np.flatnonzero(n.constant)
        shown = ", ".join(names[i] if names else str(i) for i in idx[:12]) + (", ..." if len(idx) > 12 else "")
        notes.append(f"hatched = constant {what} ({len(idx)}): {shown}")
    elif n.constant.any():
        notes.append("hatched = constant: every value is the same")
    if n.clipped.any():
        notes.append(f"{int(n.clipped.sum())} {what}(s) go beyond the scale: clipped to its ends")
    return notes


def _title(title: str | None, head: str, cut: list[str]) -> str:
    shown = f" (showing {', '.join(cut)})" if cut else ""
    return (title or head) + shown


def _heat_matrix(
    arr: Floats,
    *,
    signed: bool,
    norm: Mode,
    scale: float | None,
    cell: int | None,
    title: str | None,
    notes: bool,
) -> Picture:
    """Dense weights (out, in) as one heat matrix: a row per output unit."""
    rows, cols = arr.shape
    n = normalize(arr[None], mode=norm, signed=signed, scale=scale)  # one map: "map" == "layer"
    values, target = n.values, cell or HEAT_MAX
    if max(rows, cols) > target:  # box-average the long side(s) only: rows stay rows
        values = _shrink_to(values, min(rows, target), min(cols, target))
    h, w = values.shape[1:]
    side, short = max(h, w), min(h, w)
    if cell is None:  # towards HEAT_SIDE, or a short side of CELL; never past HEAT_MAX or 32x
        factor = max(1, min(32, HEAT_MAX // side, max(HEAT_SIDE // side, -(-CELL // short))))
    else:
        factor = _factor(side, cell, CELL)
    # a very wide (tall) matrix: thin rows (columns) are scaled more, to HEAT_ROW px each, as far
    # as HEAT_MAX // 2 px and half the long side allow
    thick = factor
    if cell is None and factor < HEAT_ROW:
        thick = max(factor, min(HEAT_ROW, HEAT_MAX // 2 // short, side * factor // 2 // short))
    fy, fx = (thick, factor) if h < w else (factor, thick) if w < h else (factor, factor)
    rgb = np.ascontiguousarray(apply(values, _cmap(signed)).repeat(fy, axis=1).repeat(fx, axis=2))
    if n.constant[0]:
        mark_constant(rgb[0])
    lines = _notes(n, True, what="matrix") if notes else []
    flat_rows = (
        np.flatnonzero(arr.min(axis=1) == arr.max(axis=1)) if cols > 1 else np.array([], dtype=int)
    )
    if notes and flat_rows.size and not n.constant[0]:
        shown = ", ".join(str(i) for i in flat_rows[:12]) + (", ..." if flat_rows.size > 12 else "")
        lines.append(f"constant rows ({flat_rows.size}): {shown}")
    if notes and values.shape[1:] != arr.shape:
        lines.append(f"box-averaged from {rows}x{cols} to {h}x{w} px")
    if notes and fy != fx:
        lines.append(f"stretched: each row {fy} px tall, each column {fx} px wide")
    head = f"dense weights {rows}x{cols}: a row per output, a column per input"
    return _sheet(rgb, cols=1, labels=None, title=title or head, notes=lines)


@functools.cache
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled default font at `px` (no download; bitmap fallback without FreeType)."""
    try:
        return ImageFont.load_default(size=px)
    except ImportError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


# what to write for characters the bundled font lacks (it has ASCII, Latin-1, "·", "±", "…")
_ASCII = {"∂": "d", "−": "-", "–": "-", "—": "-", "×": "x", "→": "->", "←": "<-", "≥": ">=",
          "≤": "<=", "≠": "!=", "≈": "~", "∇": "grad ", "Σ": "sum ", "Δ": "delta ", "σ": "sigma",
          "μ": "mu", "α": "alpha", "β": "beta", "θ": "theta", "λ": "lambda", "²": "^2", "³": "^3",
          "‖": "||", "′": "'", "‘": "'", "’": "'", "“": '"', "”": '"'}  # fmt: skip


@functools.cache
def _has_glyph(ch: str) -> bool:
    font = _font(LABEL_PX)
    return bytes(font.getmask(ch)) != bytes(font.getmask("\U000f0000"))  # not the "missing" box


def _plain(text: str) -> str:
    """`text` with characters the font can't draw spelled in ASCII (∂x/∂u -> dx/du), else "?"."""
    return "".join(c if c.isascii() or _has_glyph(c) else _ASCII.get(c, "?") for c in text)


def _text_w(text: str, px: int) -> int:
    """Drawn width in px: the advance, or the ink's right edge when a glyph overhangs it."""
    if not text:
        return 0
    font = _font(px)
    return math.ceil(max(font.getlength(text), font.getbbox(text)[2]))


def _wrap(text: str, width: int, px: int) -> list[str]:
    """`text` in lines at most `width` px wide, broken at spaces (a longer word keeps its line)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and _text_w(f"{lines[-1]} {word}", px) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _sheet(
    cells: Uint8s,
    *,
    cols: int,
    labels: list[str] | None,
    title: str | None,
    notes: list[str],
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
) -> Picture:
    """Lay out cells (N, h, w, 3) row by row, `cols` per row, each in a 1-px frame.

    Cell i sits in row i // cols, column i % cols. Text: title on top, column headers above
    the first row, row labels left of each row, a label under each cell, notes at the bottom.
    """
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    title = _plain(title) if title else None
    labels, row_labels, col_labels = (
        None if texts is None else [_plain(t) for t in texts]
        for texts in (labels, row_labels, col_labels)
    )
    count, h, w = cells.shape[:3]
    rows = -(-count // cols)
    label_h = LABEL_PX + 4 if labels else 0
    title_h = TITLE_PX + 8 if title else 0
    head_h = LABEL_PX + 5 if col_labels else 0
    left_w = max(_text_w(s, LABEL_PX) for s in row_labels) + 6 if row_labels else 0
    slot_w = max([w] + [_text_w(s, LABEL_PX) + 2 for s in (labels or []) + (col_labels or [])])
    grid_w = left_w + cols * slot_w + (cols - 1) * GAP
    grid_h = rows * (h + label_h) + (rows - 1) * GAP
    # notes wrap to the grid's (or title's) width, or NOTE_W when that is narrower: a caption
    # never makes the picture much wider than what it explains
    note_w = max(grid_w, _text_w(title or "", TITLE_PX), NOTE_W)
    notes = [line for t in notes for line in _wrap(_plain(t), note_w, LABEL_PX)]
    note_h = (LABEL_PX + 5) * len(notes) + (4 if notes else 0)
    width = 2 * MARGIN + max(
        [grid_w, _text_w(title or "", TITLE_PX)] + [_text_w(s, LABEL_PX) for s in notes]
    )
    height = 2 * MARGIN + title_h + head_h + grid_h + note_h

    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    boxes = []
    top = MARGIN + title_h + head_h
    for i in range(count):
        r, c = divmod(i, cols)
        x = MARGIN + left_w + c * (slot_w + GAP) + (slot_w - w) // 2
        y = top + r * (h + label_h + GAP)
        canvas[y : y + h, x : x + w] = cells[i]
        boxes.append(Box(x, y, w, h))

    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    font = _font(LABEL_PX)
    for b in boxes:
        draw.rectangle((b.x - 1, b.y - 1, b.x + b.w, b.y + b.h), outline=FRAME)
    if title:
        draw.text((MARGIN, MARGIN), title, font=_font(TITLE_PX), fill=INK)
    for i, text in enumerate(labels or []):
        b = boxes[i]
        draw.text(
            (b.x + b.w / 2 - font.getlength(text) / 2, b.y + b.h + 2), text, font=font, fill=INK
        )
    for c, text in enumerate(col_labels or []):
        b = boxes[c]
        draw.text(
            (b.x + b.w / 2 - font.getlength(text) / 2, top - head_h + 1), text, font=font, fill=INK
        )
    for r, text in enumerate(row_labels or []):
        b = boxes[r * cols]
        y = b.y + b.h / 2 - LABEL_PX / 2 - 1
        draw.text((MARGIN + left_w - 6 - font.getlength(text), y), text, font=font, fill=INK)
    for k, text in enumerate(notes):
        draw.text(
            (MARGIN, MARGIN + title_h + head_h + grid_h + 4 + k * (LABEL_PX + 5)),
            text,
            font=font,
            fill=INK,
        )
    return Picture(np.asarray(img), cells=boxes)
