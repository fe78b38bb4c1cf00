"""The inspect report opened in a real browser: every picture decodes, no console error, no request
leaves the machine, and the screenshot is not blank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from convscope.inspect import inspect

pytestmark = pytest.mark.browser


def test_report_renders_in_chromium(browser: Any, tmp_path: Path) -> None:
    html = inspect(out=tmp_path / "rep")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    sizes = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
    )
    assert len(sizes) >= 25
    assert all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert page.locator("section.block").count() == 4
    assert "activation map = feature map" in page.inner_text("#glossary")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=False)
    arr = np.asarray(Image.open(shot).convert("RGB"))
    assert arr.std() > 20  # not a blank page
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
    page.close()
