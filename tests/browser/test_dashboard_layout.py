"""Issue 9 §1 item 5: the dashboard works from 800 px wide up with nothing overlapping. At 800,
900 and 1400 px (Debian's chromium, a live fake run): no horizontal scroll, no two cards
overlap, every chart stays inside its own card, the header stays one line and never covers the
sticky timeline's slider once the page is scrolled. Screenshots: /tmp/dash-layout-W.png."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from server.fakerun import FakeTrainer, dashboard_over

from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp")
CARDS = ("#training", "#controls", "#health", "#timeline-bar", "#layers", "#predictions-box", "#upload-box",
         "#findings-box", "#glossary")  # fmt: skip
CHARTS = {"#chart-loss": "#training", "#chart-acc": "#training", "#chart-ratio": "#health", "#chart-dead": "#health"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    root = tmp_path_factory.mktemp("runs")
    trainer = FakeTrainer(root / "live", step_s=0.05, snapshot_every=5).start()
    with dashboard_over(root, trainer) as server:
        yield server


def overlap(a: dict[str, float], b: dict[str, float]) -> float:
    """The area two boxes share (0 when they only touch)."""
    w = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return max(0.0, w) * max(0.0, h)


def inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (
        inner["x"] >= outer["x"] - 0.5 and inner["y"] >= outer["y"] - 0.5
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5
    )  # fmt: skip


@pytest.mark.parametrize("width", [800, 900, 1400])
def test_no_overlap_from_800_px_up(browser: Any, served: DashboardServer, width: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(served.url + "#run=live")  # locators only: the page's CSP forbids eval
        page.locator("#chart-dead .uplot").wait_for()
        page.locator("#predictions .pred").first.wait_for()
        page.locator("article.layer[data-layer=conv1]").scroll_into_view_if_needed()
        page.locator("article.layer[data-layer=conv1] img.kind-a[src]").wait_for()
        page.mouse.wheel(0, -100000)
        page.wait_for_timeout(600)  # the charts follow their cards' widths (a resize observer)
        scroll_w = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_w <= width, f"horizontal scroll at {width} px: {scroll_w}"
        boxes = {sel: page.locator(sel).bounding_box() for sel in CARDS}
        for (a, ba), (b, bb) in combinations(boxes.items(), 2):
            assert overlap(ba, bb) == 0, f"{a} overlaps {b} at {width} px"
        for chart, card in CHARTS.items():
            plot = page.locator(f"{chart} .uplot").bounding_box()
            assert inside(plot, boxes[card]), f"{chart} spills out of {card} at {width} px: {plot} vs {boxes[card]}"
            for other in CARDS:
                if other != card:
                    assert overlap(plot, boxes[other]) == 0, f"{chart} covers {other} at {width} px"
        header = page.locator("#top").bounding_box()
        assert header["height"] <= 56, f"the header wraps at {width} px: {header['height']} px tall"
        page.screenshot(path=str(SHOTS / f"dash-layout-{width}.png"))
        # scrolled to the layer cards: the timeline sticks under the header, its slider uncovered
        page.locator("#layers").scroll_into_view_if_needed()
        page.mouse.wheel(0, 600)
        page.wait_for_timeout(300)
        header = page.locator("#top").bounding_box()
        bar = page.locator("#timeline-bar").bounding_box()
        slider = page.locator("#timeline").bounding_box()
        assert header["y"] == 0 and bar["y"] >= header["y"] + header["height"] - 0.5, (header, bar)
        assert slider["y"] >= header["height"] and slider["width"] >= 100, (header, slider)
        assert bar["y"] <= header["height"] + 1  # it is stuck right under the header
        page.screenshot(path=str(SHOTS / f"dash-layout-{width}-scrolled.png"))
    finally:
        page.close()
    assert errors == []
