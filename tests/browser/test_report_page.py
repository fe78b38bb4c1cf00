"""The inspect report opened in a real browser: every picture decodes, no console error, no request
leaves the machine, no page is wider than the window, and the screenshot is not blank."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from convscope.inspect import inspect

pytestmark = pytest.mark.browser


# 50 conv blocks and a classifier: a deep net whose report must stay usable (issue 8 §3)
DEEP_PY = """
from torch import nn

class Deep(nn.Module):
    def __init__(self):
        super().__init__()
        layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()]
        for _ in range(49):
            layers += [nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))
"""


def _open(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors, requests


def _all_pictures(page: Any) -> list[list[Any]]:
    """Every <img> once loaded (lazy ones made eager first): [complete, naturalWidth, naturalHeight]."""
    page.eval_on_selector_all("img", "els => els.forEach(e => { e.loading = 'eager'; })")
    sizes: list[list[Any]] = []
    for _ in range(100):
        sizes = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
        )
        if all(ok for ok, _, _ in sizes):
            break
        time.sleep(0.1)
    return sizes


def _width(page: Any) -> tuple[int, int]:
    return tuple(page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]"))  # type: ignore[return-value]


def test_report_renders_in_chromium(browser: Any, tmp_path: Path) -> None:
    html = inspect(out=tmp_path / "rep")
    page, errors, requests = _open(browser, html)
    sizes = _all_pictures(page)
    assert len(sizes) >= 8
    assert all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
    assert page.locator("section.ov").count() == 4  # the overview: one entry per block
    assert "activation map = feature map" in page.inner_text("#glossary")
    assert _width(page)[0] <= _width(page)[1]
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=False)
    arr = np.asarray(Image.open(shot).convert("RGB"))
    assert arr.std() > 20  # not a blank page
    page.locator("section.ov h3 a").first.click()  # to the first block's own page
    page.wait_for_load_state("load")
    assert page.url.endswith("/blocks/00_conv1.html")
    sizes = _all_pictures(page)
    assert len(sizes) == 7 and all(ok and w > 0 for ok, w, _ in sizes), sizes
    assert page.locator("figure").count() == 7  # x, W, z, a, dL/dW, dL/dz, dL/da
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    page.close()


def test_fifty_block_report_fits_the_window(browser: Any, tmp_path: Path) -> None:
    """Navigation wraps: no page is wider than a 1400 px window, the overview or a block's."""
    (tmp_path / "deep.py").write_text(DEEP_PY)
    html = inspect(f"{tmp_path / 'deep.py'}:Deep", input_size="3x32x32", out=tmp_path / "rep")
    blocks = sorted((tmp_path / "rep" / "blocks").glob("*.html"))
    assert len(blocks) == 51 and blocks[-1].name == "50_fc.html"
    for path in [html, blocks[0], blocks[25], blocks[-1]]:
        page, errors, requests = _open(browser, path)
        sizes = _all_pictures(page)
        assert sizes and all(ok and w > 0 for ok, w, _ in sizes), (path.name, sizes)
        scroll_w, inner_w = _width(page)
        assert inner_w == 1400 and scroll_w <= inner_w, (path.name, scroll_w)
        assert errors == [] and all(u.startswith("file:") for u in requests), (errors, requests)
        page.close()


def test_diagnose_report_renders_in_chromium(browser: Any, tmp_path: Path) -> None:
    import torch

    import convscope as cs
    from convscope.models import load_model
    from convscope.render.diagnose_report import write_diagnosis_report

    model, _, _ = load_model("zoo:convnetjs-cifar")
    x = torch.full((64, 3, 32, 32), -1.0)  # flat dark images: some filters never fire on them
    diag = cs.diagnose(model, x, batch_size=32)
    html = write_diagnosis_report(diag, tmp_path / "diag")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(Path(html).as_uri())
    page.wait_for_load_state("load")
    sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
    assert sizes and all(ok and w > 0 for ok, w in sizes)
    assert errors == []
    assert "on this data" in page.inner_text("body")
    page.set_viewport_size({"width": 800, "height": 900})  # the layer table scrolls in its box
    assert _width(page) == (800, 800)
    page.close()


def test_projection_patches_keep_their_aspect(browser: Any, tmp_path: Path) -> None:
    """A unit's receptive-field crop is often not square (18×22 at the border of conv3): drawn in
    its 128×128 box it must keep its shape (CSS object-fit; it was stretched to a square)."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "convscope", "project", "--out", str(tmp_path / "p")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    page, errors, _ = _open(browser, tmp_path / "p" / "index.html")
    _all_pictures(page)
    shapes = page.eval_on_selector_all(
        "figure img.proj",
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return [e.naturalWidth, e.naturalHeight, r.width, r.height, getComputedStyle(e).objectFit]; })",
    )
    wide = [x for x in shapes if x[0] != x[1]]
    assert wide, shapes  # the default image has crops at the border
    assert {(w, h, fit) for _, _, w, h, fit in wide} == {(130, 130, "contain")}  # 128 + border: nw:nh inside
    assert errors == []
    page.close()
