"""Labels and scales of the live dashboard that users found wrong, in Debian's chromium:

1. "Predictions on test images": a label ("✓ motorcycle 100.0%") is never cut at its bar's end,
   at any window width (it was at 1280 px: "✓ motorcycle 99.");
2. projections of a block without an activation (fc) say z and the class name, never
   "max a = -13.59", and the "click one map in a = f(z)" hint shows only on a card with that picture;
3. a held-out crop clicked after a file was sent clears the file picker, and the answer line says
   which image was answered;
4. occlusion panel (b) has a colour scale (0 … max, where this image's values lie); a window or
   stride that is not a whole number 1..64 is refused in the page, in plain words, and never sent.
Screenshots: /tmp/pictures-labels-*.png."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from server.fakerun import CONFIG, LAYERS, FakeTrainer, dashboard_over, sample_images, z_of

from convscope.runs import RunWriter
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

LONG = ["astronaut", "motorcycle", "chelsea"]  # the demo's longest class names
PREDICTIONS = [
    {"index": k, "label": k % 3, "label_name": LONG[k % 3], "correct": True,
     "top": [[k % 3, LONG[k % 3], 1.0 - 0.0004 * k], [(k + 1) % 3, LONG[(k + 1) % 3], 0.0003 * k],
             [(k + 2) % 3, LONG[(k + 2) % 3], 0.0001 * k]]}
    for k in range(12)
]  # fmt: skip
FEATURE = [[400.1, 398.0, 401.0], [395.5, 399.9, 400.5]]  # (b): nearly flat, far from 0


def write_named(root: Path) -> None:
    """A stopped run with long class names, 12 test images and their predictions; conv1 has an
    a = f(z) picture, fc only z (no activation)."""
    meta = {"model": "zoo:fixture-net", "trainer": "builtin", "classes": LONG, "input_shape": [3, 8, 8]}
    w = RunWriter(root / "named", config=CONFIG, meta=meta)
    w.log_json(0, "layers", LAYERS)
    w.log_snapshot(0, "_test", "input", sample_images().repeat(6, 1, 1, 1))  # (12, 3, 8, 8)
    z = z_of(0)
    w.log_snapshot(0, "conv1", "x", sample_images()[:1])
    w.log_snapshot(0, "conv1", "z", z)
    w.log_snapshot(0, "conv1", "a", z.clamp_min(0))
    w.log_snapshot(0, "fc", "z", torch.tensor([[-1.0, 0.5, 2.0]]))
    w.log_scalars(0, {"loss": 1.0})
    w.log_json(0, "predictions", PREDICTIONS)
    w.commit(0)
    w.close(status="stopped")


class Answering(FakeTrainer):
    """The fake trainer, also answering `project` (fc's class scores) and `occlude` (a fixed,
    nearly flat panel (b)) as the built-in trainer stores them."""

    def _controls(self) -> None:
        w = self.writer
        for c in w.poll_controls():
            result: dict[str, Any] = {"ok": True}
            step = max(self.step - 1, 0)
            if c.key == "predict":
                result.update(self._predict(c.id, c.value))
            elif c.key == "project":
                self._project(c.id, step)
            elif c.key == "occlude":
                self._occlude(c.id, step)
            self.acked.append((c.key, c.value))
            w.ack_control(c.id, step, result=result)

    def _project(self, ident: int, step: int) -> None:
        w = self.writer
        units = [{"channel": 2, "value": 2.0, "position": None}, {"channel": 0, "value": -1.5, "position": None}]
        for u in units:
            for kind in ("deconvnet", "guided"):
                w.log_snapshot(step, f"project:{ident}/{u['channel']}", kind, torch.zeros(1, 3, 8, 8))
        w.log_json(step, f"project:{ident}", {
            "layer": "fc", "tensor": "z of block fc (no activation follows)", "units": units, "asked": 2,
            "step": step, "weights": f"step {step}", "input_step": step, "rules": {}, "seconds": 0.01,
            "budget_s": 2.0})  # fmt: skip
        w.commit(step)

    def _occlude(self, ident: int, step: int) -> None:
        w = self.writer
        feat = np.array(FEATURE)
        w.log_snapshot(step, f"occlusion:{ident}", "b-feature", torch.from_numpy(feat / feat.max()).float()[None, None].repeat(1, 3, 1, 1))
        w.log_json(step, f"occlusion:{ident}", {
            "image": "test image 0", "layer": "conv1", "channel": 2, "window": 4, "stride": 2,
            "rows": [0, 2], "cols": [0, 2, 4], "target": 0, "target_name": "cat",
            "clean_probability": 0.75, "clean_feature": 400.1, "probability": [[0.7, 0.75, 0.75], [0.6, 0.75, 0.75]],
            "feature": FEATURE, "label": [[0, 0, 0], [0, 0, 0]],
            "legend": [{"class": 0, "name": "cat", "colour": "#d55e00", "positions": 6}],
            "top": [[0, "cat", 0.75], [1, "dog", 0.125], [2, "car", 0.125]],
            "panels": [{"kind": "b-feature", "caption": "(b) total activation of map 2 of conv1 (unoccluded: 400.1)"}],
            "method": "exact", "positions": 6, "step": step, "weights": f"step {step}", "seconds": 0.01})  # fmt: skip
        w.commit(step)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DashboardServer, Answering]]:
    root = tmp_path_factory.mktemp("runs")
    write_named(root)
    trainer = Answering(root / "live", step_s=0.05, snapshot_every=5).start()
    with dashboard_over(root, trainer) as server:
        yield server, trainer


def open_page(browser: Any, server: DashboardServer, run: str, width: int = 1280) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900}, bypass_csp=True)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}#run={run}")
    page.wait_for_function(f"document.querySelector('#run-select').value === {json.dumps(run)}")
    return page, errors


CUT = """() => [...document.querySelectorAll('#predictions .top3 .bar')].filter((b) => {
  const l = b.querySelector('span.label').getBoundingClientRect(), r = b.getBoundingClientRect();
  return l.right > r.right + 0.5 || l.bottom > r.bottom + 0.5 || l.left < r.left - 0.5;
}).map((b) => b.textContent)"""


@pytest.mark.parametrize("width", [760, 1024, 1280, 1600, 1920])
def test_prediction_labels_fit_their_bars(browser: Any, served: Any, width: int) -> None:
    page, errors = open_page(browser, served[0], "named", width)
    try:
        page.wait_for_function("document.querySelectorAll('#predictions .pred').length === 12")
        labels = page.eval_on_selector_all("#predictions .top3 .bar span.label", "els => els.map((e) => e.textContent)")
        assert labels[:3] == ["✓ astronaut 100.0%", "motorcycle 0.0%", "chelsea 0.0%"]
        assert "✓ motorcycle 100.0%" in labels and "✓ motorcycle 99.8%" in labels and len(labels) == 36
        assert page.evaluate(CUT) == []
        if width == 1280:
            page.locator("#predictions-box").screenshot(path="/tmp/pictures-labels-predictions-1280.png")
    finally:
        page.close()
    assert errors == []


def test_project_hint_only_on_cards_with_an_a_picture(browser: Any, served: Any) -> None:
    page, errors = open_page(browser, served[0], "named")
    try:
        for name in ("conv1", "fc"):
            page.locator(f"article.layer[data-layer={name}]").scroll_into_view_if_needed()
        page.wait_for_function("document.querySelector('article.layer[data-layer=conv1] img.kind-a[src]') !== null")
        conv1 = page.locator("article.layer[data-layer=conv1] .project-hint")
        fc = page.locator("article.layer[data-layer=fc] .project-hint")
        assert conv1.is_visible() and conv1.inner_text().strip().startswith("or click one map in a = f(z)")
        assert not fc.is_visible()
        assert page.locator("article.layer[data-layer=fc] img.kind-z").count() == 1
    finally:
        page.close()
    assert errors == []


def test_fc_projections_say_z_and_the_class(browser: Any, served: Any) -> None:
    page, errors = open_page(browser, served[0], "live")
    try:
        card = page.locator("article.layer[data-layer=fc]")
        card.scroll_into_view_if_needed()
        card.locator("button.project-top").click()
        card.locator(".projection .unit").nth(1).wait_for(timeout=15_000)
        heads = card.locator(".projection .unit h4").evaluate_all("hs => hs.map((h) => h.firstChild.textContent)")
        assert heads == ["class 2 (car): z = 2 ", "class 0 (cat): z = -1.5 "]
        assert "max a" not in card.inner_text()
    finally:
        page.close()
    assert errors == []


def test_a_crop_after_a_file_clears_the_file_name(browser: Any, served: Any, tmp_path: Path) -> None:
    page, errors = open_page(browser, served[0], "live")
    try:
        path = tmp_path / "tiny.png"
        Image.fromarray(np.full((6, 6, 3), 200, dtype=np.uint8)).save(path)
        page.wait_for_selector("#upload-file:not([disabled])", timeout=15_000)
        page.set_input_files("#upload-file", str(path))
        page.click("#upload-btn")
        page.wait_for_function("/answered at step \\d+: tiny.png$/.test(document.querySelector('#upload-state').textContent)", timeout=15_000)
        assert page.input_value("#upload-file").endswith("tiny.png")
        page.locator("#heldout button.crop").nth(1).click()
        page.wait_for_function("/answered at step \\d+: held-out crop 1$/.test(document.querySelector('#upload-state').textContent)", timeout=15_000)
        assert page.input_value("#upload-file") == ""
        page.locator("#upload-form").screenshot(path="/tmp/pictures-labels-crop.png")
    finally:
        page.close()
    assert errors == []


def test_occlusion_b_has_a_scale_and_bad_sizes_are_refused(browser: Any, served: Any) -> None:
    server, trainer = served
    page, errors = open_page(browser, server, "live")
    try:
        page.locator("#occlusion-box").scroll_into_view_if_needed()
        page.wait_for_function("[...document.querySelectorAll('#occ-image option')].some((o) => o.value === 'test:0')")
        page.select_option("#occ-image", "test:0")
        sent = sum(1 for key, _ in trainer.acked if key == "occlude")
        page.locator("#occ-window").type("e")
        page.click("#occ-go")
        assert page.inner_text("#occ-state") == (
            "window: type a whole number of pixels from 1 to 64 (what is typed is not a number), or leave it empty for auto"
        )
        assert page.get_attribute("#occ-window", "aria-invalid") == "true"
        page.fill("#occ-window", "")
        for bad in ("0", "2.5", "65"):
            page.fill("#occ-stride", bad)
            page.click("#occ-go")
            assert page.inner_text("#occ-state") == (
                f"stride: type a whole number of pixels from 1 to 64 ({bad} is not one), or leave it empty for auto"
            )
        page.fill("#occ-stride", "2")
        page.click("#occ-go")
        page.wait_for_selector("#occ-state.ok", timeout=15_000)
        assert sum(1 for key, _ in trainer.acked if key == "occlude") == sent + 1  # the bad ones never left
        assert trainer.acked[-1] == ("occlude", {"upload": None, "test": 0, "layer": None, "window": None, "stride": 2, "target": None})
        scale = page.locator("figure.occ-panel[data-kind=b-feature] .occ-scale")
        assert scale.locator(".occ-ticks span").all_inner_texts() == ["0 (dark)", "401 (yellow)"]
        assert scale.locator("p.note").inner_text() == (
            "colour = total activation of map 2 with the square at that position, from 0 (dark purple) to 401 (yellow). "
            "Here it spans 395.5 … 401 (marked on the bar): covering a part lowers it by at most 1.15% of the unoccluded 400.1."
        )
        bar, mark = scale.locator(".occ-bar").bounding_box(), scale.locator(".occ-range").bounding_box()
        assert bar is not None and mark is not None
        inner = bar["width"] - 2  # inside its 1 px border
        assert mark["x"] - (bar["x"] + 1) == pytest.approx(inner * 395.5 / 401, abs=1.0)
        assert mark["x"] + mark["width"] == pytest.approx(bar["x"] + 1 + inner, abs=1.0)
        page.locator("#occlusion-box").screenshot(path="/tmp/pictures-labels-occlusion.png")
    finally:
        page.close()
    assert errors == []


def test_predict_with_no_file_says_so_beside_the_upload(browser: Any, served: Any) -> None:
    """It was a toast at the bottom right that stayed over the next, successful answer."""
    page, errors = open_page(browser, served[0], "live")
    try:
        page.wait_for_selector("#upload-file:not([disabled])", timeout=15_000)
        page.click("#upload-btn")
        page.wait_for_selector("#upload-state.bad", timeout=5_000)
        assert page.inner_text("#upload-state") == "choose an image file first (or click a held-out crop)"
        assert page.locator("#messages .msg").count() == 0
        page.locator("#heldout button.crop").nth(0).click()  # an answer replaces the line
        page.wait_for_function("/answered at step \\d+: held-out crop 0$/.test(document.querySelector('#upload-state').textContent)", timeout=15_000)
        assert page.locator("#upload-state.bad").count() == 0
    finally:
        page.close()
    assert errors == []
