"""Occlusion and the embedding view on the live dashboard, in Debian's chromium: the built-in trainer
runs in a thread; an uploaded photo is occluded (ZF Fig. 7's panels come back from the trainer and
show), the held-out images are mapped (dots on the canvas, a thumbnail on hover, the class filter
hides a class), and a checkpoint is placed into the same map. Screenshots: /tmp/dash-occlusion.png,
/tmp/dash-embedding.png."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from server.fakerun import ThreadedTrainer, dashboard_over
from skimage import data as skdata

from convscope.config import TrainConfig
from convscope.server import DashboardServer
from convscope.train import Trainer

pytestmark = pytest.mark.browser

COLOURED = """() => { const c = document.querySelector('#emb-canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && !(d[i] === d[i + 1] && d[i + 1] === d[i + 2])) n++; return n; }"""
A_DOT = """() => { const c = document.querySelector('#emb-canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && !(d[i] === d[i + 1] && d[i + 1] === d[i + 2])) {
    const p = i / 4, r = c.getBoundingClientRect(); return [r.left + (p % c.width) * r.width / c.width, r.top + Math.floor(p / c.width) * r.height / c.height]; }
  return null; }"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    root = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(train_size=512, val_size=200, test_images=4, batch_size=16, val_every=50, snapshot_every=0.5)
    with dashboard_over(root, ThreadedTrainer(Trainer(cfg, root / "live")).start()) as server:
        yield server


def _until(check: Callable[[], Any], what: str, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _state(page: Any, selector: str) -> str:
    """What the page showed at `selector` (its class and text, its HTML cut to 400 characters)."""
    el = page.locator(selector)
    return f"{selector} class={el.get_attribute('class')!r} text={el.inner_text()!r} html={el.inner_html()[:400]!r}"


def test_upload_then_occlusion_panels(browser: Any, served: DashboardServer, tmp_path: Path) -> None:
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skdata.chelsea()).save(photo)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served.url + "#run=live")
    # the file input and its button are off until the page has the run and its trainer answers
    # (controls.enable). The form is then submitted as its button does, not by a click at the
    # button's place: pictures still loading move the page under a click (twice in slow
    # fresh-clone CI runs the upload never started: #upload-state stayed empty)
    from playwright.sync_api import expect

    for selector in ("#upload-file", "#upload-btn"):
        expect(page.locator(selector)).to_be_enabled(timeout=120_000)
    page.locator("#upload-file").set_input_files(str(photo))
    page.locator("#upload-form").evaluate("(f) => f.requestSubmit(document.querySelector('#upload-btn'))")
    try:  # answered by the live trainer: slow under load
        page.locator("#upload-state.ok").wait_for(timeout=120_000)
    except Exception as exc:  # say what the page showed
        said = page.inner_text("#messages")
        raise AssertionError(f"upload never ok: {_state(page, '#upload-state')}; messages: {said!r}; console: {errors}") from exc
    page.locator("#occ-image").click()  # the list of images is read again
    option = page.locator("#occ-image option[value^='upload:']").first
    option.wait_for(state="attached", timeout=30000)
    page.locator("#occ-image").select_option(option.get_attribute("value"))
    page.locator("#occ-window").fill("8")
    page.locator("#occ-stride").fill("4")
    page.locator("#occ-go").click()
    page.locator("#occ-state.ok").wait_for(timeout=120000)
    panels = page.locator("#occ-result figure.occ-panel")
    assert panels.count() == 6
    kinds = [panels.nth(i).get_attribute("data-kind") for i in range(6)]
    assert kinds == ["a-input", "b-feature", "c-projection", "d-probability", "d-overlay", "e-labels"]
    _until(lambda: page.evaluate("() => [...document.querySelectorAll('#occ-result img')].every((i) => i.complete && i.naturalWidth >= 200)"), "the panels to load")
    text = page.locator("#occ-result").inner_text()
    assert "upload" in text and "chelsea.png" in text and "(d) p(" in text and "most probable label" in text
    page.locator("#occlusion-box").screenshot(path="/tmp/dash-occlusion.png")
    assert errors == []


def test_embedding_map_hover_filter_and_placement(browser: Any, served: DashboardServer) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    held: list[Any] = []  # the thumbnail sheet's request, answered once the tip is up (a slow server)
    page.route("**/thumbs.png", lambda route: held.append(route))
    page.goto(served.url + "#run=live")
    page.locator("#emb-n").fill("150")
    page.locator("#emb-go").click()
    page.locator("#emb-state.ok").wait_for(timeout=120000)
    page.locator("#embedding-box").scroll_into_view_if_needed()
    before = _until(lambda: page.evaluate(COLOURED), "dots on the canvas")
    assert page.locator("#emb-legend input[type=checkbox]").count() >= 2
    dot = page.evaluate(A_DOT)
    page.mouse.move(dot[0] + 1, dot[1] + 2)
    page.locator("#emb-tip:not([hidden])").wait_for(timeout=5000)
    assert page.locator("#emb-tip").inner_text().startswith("#")
    thumb = "() => { const d = document.querySelector('#emb-tip canvas').getContext('2d').getImageData(0, 0, 64, 64).data; return d.some((v, i) => i % 4 === 3 && v > 0); }"
    # a hover before the sheet has come shows the tip at once, and its thumbnail when the sheet comes
    # (it was drawn on mouse moves only: under load the test's one move came first, and it never drew)
    assert not page.evaluate(thumb)
    _until(lambda: held, "the thumbnail sheet's request")
    held[0].continue_()
    try:
        _until(lambda: page.evaluate(thumb), "the thumbnail")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_state(page, '#emb-tip')}; console: {errors}") from exc
    page.unroute("**/thumbs.png")
    page.locator("#embedding-box").screenshot(path="/tmp/dash-embedding.png")
    page.locator("#emb-legend input[type=checkbox]").first.uncheck()
    after = page.evaluate(COLOURED)
    assert 0 < after < before  # one class hidden
    page.locator("#emb-legend input[type=checkbox]").first.check()
    page.locator("#emb-ckpt").click()
    ckpt = page.locator("#emb-ckpt option:not([value=''])").first
    ckpt.wait_for(state="attached", timeout=60000)
    page.locator("#emb-ckpt").select_option(ckpt.get_attribute("value"))
    page.locator("#emb-place").click()
    _until(lambda: "placed into the map" in page.locator("#emb-info").inner_text(), "the placement", 120)
    coloured = page.evaluate(COLOURED)
    assert coloured > 0, f"no coloured placed dot: {_state(page, '#emb-state')}; {_state(page, '#emb-info')}; console: {errors}"
    page.locator("#embedding-box").screenshot(path="/tmp/dash-embedding-placed.png")
    assert errors == []
