"""Projections from the live dashboard, in Debian's chromium: the built-in trainer runs in a thread on
the real zoo net; a click on one feature map of a layer card, and the "9 strongest" button, bring
back the deconvnet and guided-backprop pictures the trainer computed. Screenshot: /tmp/dash-projection.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server.fakerun import ThreadedTrainer, dashboard_over

from convscope.config import TrainConfig
from convscope.server import DashboardServer
from convscope.train import Trainer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    root = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(train_size=512, val_size=64, test_images=4, batch_size=16, val_every=50, snapshot_every=0.5)
    with dashboard_over(root, ThreadedTrainer(Trainer(cfg, root / "live")).start()) as server:
        yield server


def test_click_a_map_then_the_nine_strongest(browser: Any, served: DashboardServer) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served.url + "#run=live")
    img = page.locator("article.layer[data-layer=conv2] img.kind-a[src]").first
    img.wait_for(timeout=60000)
    img.scroll_into_view_if_needed()
    page.wait_for_function(
        "document.querySelector('article.layer[data-layer=conv2] img.kind-a').naturalWidth > 0"
    )
    cells = page.evaluate(
        """async () => {
        const img = document.querySelector('article.layer[data-layer=conv2] img.kind-a');
        const u = new URL(img.src);
        const r = await fetch('/api/runs/live/cells?' + u.searchParams.toString());
        return await r.json();
      }"""
    )
    assert len(cells["cells"]) == 20  # conv2 of convnetjs-cifar: 20 feature maps
    x, y, w, h = cells["cells"][7]
    img.evaluate("e => e.scrollIntoView({block: 'center'})")  # the whole picture in the viewport
    box = img.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 1 + x + w / 2, box["y"] + 1 + y + h / 2)  # 1 px border; drawn 1:1
    card = page.locator("article.layer[data-layer=conv2]")
    unit = card.locator(".projection .unit[data-channel='7']")
    try:
        unit.wait_for(timeout=30000)
    except Exception:
        raise AssertionError(f"{card.locator('.projection').inner_text()} | {errors} | {cells} | {box}") from None
    assert unit.locator("h4").inner_text().startswith("map 7: max a = ")
    assert card.locator(".projection .unit").count() == 1
    page.wait_for_function(
        "[...document.querySelectorAll('article.layer[data-layer=conv2] .projection img')]"
        ".every((i) => i.complete && i.naturalWidth > 0)"
    )
    captions = unit.locator("figcaption").all_inner_texts()
    assert captions == ["a[7]", "deconvnet (ZF)", "guided backprop"]
    note = card.locator(".projection p.note").inner_text()
    assert note.startswith("a of block conv2 (after relu2): the image the maps showed at step ")

    card.locator("button.project-top").click()
    page.wait_for_function(
        "document.querySelectorAll('article.layer[data-layer=conv2] .projection .unit').length === 9",
        timeout=30000,
    )
    page.wait_for_function(
        "[...document.querySelectorAll('article.layer[data-layer=conv2] .projection img')]"
        ".every((i) => i.complete && i.naturalWidth > 0)"
    )
    values = [float(t.split("max a = ")[1].split(" ")[0]) for t in card.locator(".projection h4").all_inner_texts()]
    assert values == sorted(values, reverse=True)
    first = card.locator(".projection .unit").first
    first.locator("button.explore").click()
    page.wait_for_function(
        "(() => { const imgs = [...document.querySelectorAll("
        "'article.layer[data-layer=conv2] .projection .unit .explored img')];"
        " return imgs.length >= 5 && imgs.every((i) => i.complete && i.naturalWidth > 0); })()",
        timeout=60000,
    )
    note = first.locator(".explored p.note").inner_text()
    assert "over 64 held-out images" in note
    first.locator(".explored input.live").check()  # live: the trainer answers again as it learns
    page.wait_for_function(
        "(before) => { const n = document.querySelector("
        "'article.layer[data-layer=conv2] .projection .unit .explored p.note');"
        " return n && n.textContent !== before; }",
        arg=note,
        timeout=60000,
    )
    assert first.locator(".explored input.live").is_checked()
    assert first.locator(".explored img.stimulus").count() == 1  # kept from the first answer
    card.screenshot(path=str(Path("/tmp/dash-projection.png")))
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    page.close()
    assert errors == []
