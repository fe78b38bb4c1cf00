"""Pieces shared by convscope's self-contained HTML pages (inspect and diagnose reports).

One stylesheet and one page frame, so every report looks alike; pictures are inlined as data
URIs by the callers, and nothing on a page is fetched from the network. Every page carries the
dashboard's Content-Security-Policy in a <meta> tag (no script at all; the one <style> block
allowed by its hash, so no inline style attribute works either), and still opens offline.

    doc = page(title="convscope diagnose", header="<p>model …</p>", body="<section>…</section>")
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .picture import Picture

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1c1c1c;background:#fafafa}
header{background:#1f2937;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cbd5e1}main{padding:16px 24px;max-width:1500px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:0 0 8px;font-family:ui-monospace,monospace}
table.spec{border-collapse:collapse;margin-bottom:6px}table.spec th{text-align:left;color:#555;
font-weight:600;padding:1px 12px 1px 0}table.spec td{font-family:ui-monospace,monospace}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;max-width:100%}figure img{display:block;image-rendering:pixelated;max-width:100%;
border:1px solid #ddd}figure img.photo{width:160px;height:160px;object-fit:contain}figcaption{font-size:12px;color:#333;max-width:420px}
.stats{font-family:ui-monospace,monospace;font-size:12px;color:#333}.warn{color:#b91c1c}
table.gloss{border-collapse:collapse}table.gloss td,table.gloss th{border:1px solid #e5e7eb;padding:4px 8px;
text-align:left;vertical-align:top}.bar{background:#e5e7eb;width:220px;height:12px;display:inline-block;
vertical-align:middle}.bar rect{fill:#2563eb}.pred{font-family:ui-monospace,monospace}
nav a{margin-right:10px;font-family:ui-monospace,monospace;font-size:12px}
"""


def csp(style: str) -> str:
    """The report's policy: the dashboard's (server/security.py) with its one <style> block
    allowed by hash; no frame-ancestors, which a <meta> policy cannot carry."""
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode("ascii")
    return (
        f"default-src 'self'; img-src 'self' data:; style-src 'sha256-{digest}'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'"
    )


def head(title: str, css: str) -> str:
    """`<head>…</head>`: charset, the CSP <meta> (before anything it governs), title, style."""
    return (
        '<head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp(css)}">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{css}</style></head>"
    )


def finite(value: Any) -> Any:
    """A copy of `value` with every non-finite float replaced by None (tuples become lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def strict_json(value: Any, *, indent: int | None = 2) -> str:
    """JSON that every parser reads: NaN and ±Inf become null (json.dumps writes NaN, which is
    not JSON: a browser's JSON.parse refuses the whole file)."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


def bar(fraction: float) -> str:
    """A horizontal bar filled to `fraction` (0..1), as SVG: no inline style for the CSP to block."""
    pct = 100 * min(max(fraction, 0.0), 1.0)
    return (
        "<svg class='bar' viewBox='0 0 100 1' preserveAspectRatio='none' aria-hidden='true'>"
        f"<rect width='{pct:.1f}' height='1'/></svg>"
    )


def page(*, title: str, header: str, body: str, css: str = "") -> str:
    """A whole HTML document: `title` (plain text), `header` and `body` (HTML), extra `css`."""
    return (
        f'<!doctype html>\n<html lang="en">{head(title, CSS + css)}\n'
        f"<body><header><h1>{html.escape(title)}</h1>{header}</header>"
        f"<main>\n{body}\n</main></body></html>\n"
    )


def report_dir(out_dir: str | Path) -> tuple[Path, Path]:
    """A report's folder and its png/ folder, created; one clear error if `out_dir` is a file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    png = out / "png"
    png.mkdir(parents=True, exist_ok=True)
    return out, png


def picture_figure(
    pic: Picture, caption: str, *, name: str, png: Path | None, files: dict[str, str], css: str = ""
) -> str:
    """`<figure>` with the picture inlined; with `png`, also saved as png/NAME.png (noted in `files`)."""
    if png is not None:
        pic.save(png / f"{name}.png")
        files[name] = f"png/{name}.png"
    cls = f' class="{css}"' if css else ""
    return (
        f'<figure><img{cls} src="{pic.data_uri()}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    header: str,
    body: Callable[[Path, dict[str, str]], str],
    json_name: str,
    summary: Callable[[dict[str, str]], Any],
    css: str = "",
    indent: int | None = 2,
) -> Path:
    """A report folder: `index.html` (a `page` around `body(png, files)`, which saves its PNGs into
    png/ and notes them in `files`), `json_name` (`summary(files)` as JSON); the HTML path."""
    out, png = report_dir(out_dir)
    files: dict[str, str] = {}
    text = body(png, files)
    path = out / "index.html"
    path.write_text(page(title=title, header=header, body=text, css=css), encoding="utf-8")
    (out / json_name).write_text(strict_json(summary(files), indent=indent), encoding="utf-8")
    return path
