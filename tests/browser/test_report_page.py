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
