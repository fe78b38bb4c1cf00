"""Review defects of the live dashboard, each checked in Debian's chromium over a recorded run
(`recorded`: settings in effect that differ from the launch settings, a weight-decay loss in a
narrow range, evolution and user-saved checkpoints) and a live fake trainer (`live`):

1. the Embedding panel's checkpoint list is filled once the page has opened the run;
2. after a reload the control fields show the values in effect, not the launch settings;
3. an answered upload joins the Occlusion panel's image list at once (and its help text names
   the section the page has: "Try an image");
4. at 390 px the header wraps inside its dark bar: no sideways scroll, a readable glossary link;
5. axis tick labels have the decimals their increment needs (no "0.027" three times);
6. while paused, examples/s says "paused" and the run picker says paused, as the badge does.
Screenshots: /tmp/dash-fixes-390.png, /tmp/dash-fixes-1280.png."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from server.fakerun import CONFIG, LAYERS, META, FakeTrainer, dashboard_over

from convscope.runs import RunWriter
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

IN_EFFECT = {"lr": 0.0625, "momentum": 0.75, "batch_size": 8.0, "weight_decay": 0.001}  # != CONFIG
WD_LOSS = [0.02712 + 0.000006 * k for k in range(10)]  # 0.02712 … 0.027174: a narrow range
CHECKPOINTS = [("evo-000001", 0), ("evo-000002", 1), ("mine-1", 5)]  # (name, saved after step)


def write_recorded(root: Path) -> None:
    """A stopped 10-step run whose settings were changed after launch (CONFIG: lr 0.125,
    momentum 0.5, batch size 4, weight decay 0), with checkpoints saved along the way."""
    w = RunWriter(root / "recorded", config=CONFIG, meta=META)
    w.log_json(0, "layers", LAYERS)
    weights = {"conv1.weight": torch.zeros(4, 3, 3, 3), "conv1.bias": torch.zeros(4)}
    saves = dict((step, name) for name, step in CHECKPOINTS)
    for step in range(10):
        w.log_scalars(step, {"loss": 1.0 / (1 + step), "wd_loss": WD_LOSS[step], "train_acc": 0.5,
                             "examples": 8.0 * (step + 1), "examples_per_s": 800.0, **IN_EFFECT})  # fmt: skip
        w.commit(step)
        if step in saves:
            w.save_checkpoint(weights, saves[step])
    w.close(status="stopped")


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DashboardServer, FakeTrainer]]:
    root = tmp_path_factory.mktemp("runs")
    write_recorded(root)
    trainer = FakeTrainer(root / "live", step_s=0.05, snapshot_every=5).start()
    with dashboard_over(root, trainer) as server:
        yield server, trainer


def open_page(
    browser: Any, server: DashboardServer, run: str, width: int = 1280, height: int = 800
) -> tuple[Any, list[str]]:
    # bypass_csp: wait_for_function evals its predicate in the page (the CSP is tested elsewhere)
    page = browser.new_page(viewport={"width": width, "height": height}, bypass_csp=True)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}#run={run}")
    page.wait_for_function(f"document.querySelector('#run-select').value === {json.dumps(run)}")
    page.wait_for_function("document.querySelectorAll('.uplot').length === 4")
    return page, errors


def values(page: Any, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map((e) => e.value)")


def test_embedding_lists_the_runs_checkpoints(
    browser: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    page, errors = open_page(browser, served[0], "recorded")
    try:
        names = [name for name, _ in CHECKPOINTS]
        page.wait_for_function("document.querySelectorAll('#ckpt-select option').length === 3")
        assert values(page, "#ckpt-select option") == names  # the Controls panel's list
        # the Embedding panel's list, without focusing it: "the weights of now", then oldest first
        page.wait_for_function(
            "document.querySelectorAll('#emb-ckpt option').length === 4", timeout=5_000
        )
        assert values(page, "#emb-ckpt option") == ["", *names]
        texts = page.eval_on_selector_all(
            "#emb-ckpt option", "els => els.map((e) => e.textContent)"
        )
        assert texts == [
            "the weights of now",
            "evo-000001 (step 0)",
            "evo-000002 (step 1)",
            "mine-1 (step 5)",
        ]
    finally:
        page.close()
    assert errors == []


def test_fields_show_the_values_in_effect_after_a_reload(
    browser: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    page, errors = open_page(browser, served[0], "recorded")
    fields = "['lr', 'momentum', 'batch_size', 'weight_decay'].map((k) => document.querySelector('#ctl-' + k).value)"
    try:
        for _ in range(2):  # as opened, and after a reload
            page.wait_for_function("document.querySelector('#cur-momentum').textContent === '0.75'")
            assert [
                page.inner_text(s) for s in ("#cur-lr", "#cur-momentum", "#cur-batch", "#cur-wd")
            ] == ["0.0625", "0.75", "8", "0.001"]
            page.wait_for_function(
                f'JSON.stringify({fields}) === \'["0.0625","0.75","8","0.001"]\'', timeout=5_000
            )
            assert page.evaluate(fields) == [
                "0.0625",
                "0.75",
                "8",
                "0.001",
            ]  # not CONFIG's 0.125, 0.5, 4, 0
            page.reload()
            page.wait_for_function("document.querySelectorAll('.uplot').length === 4")
    finally:
        page.close()
    assert errors == []


def test_applied_value_shows_after_a_reload_and_a_typed_one_stays(
    browser: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    server, trainer = served
    page, errors = open_page(browser, server, "live")
    try:
        page.wait_for_function("document.querySelector('#status').textContent === 'running'")
        page.fill("#ctl-lr", "0.03125")
        page.click("#apply-lr")
        page.wait_for_selector("#ack-lr.ok", timeout=10_000)
        page.wait_for_function(
            "document.querySelector('#cur-lr').textContent === '0.03125'", timeout=10_000
        )
        assert trainer.lr == 0.03125
        page.reload()
        page.wait_for_function(
            "document.querySelector('#cur-lr').textContent === '0.03125'", timeout=10_000
        )
        page.wait_for_function(
            "document.querySelector('#ctl-lr').value === '0.03125'", timeout=5_000
        )
        assert page.input_value("#ctl-lr") == "0.03125"  # not the launch setting 0.125
        assert page.input_value("#ctl-momentum") == "0.5"
        page.fill("#ctl-lr", "0.5")  # typed, not applied: the redraws of the next steps leave it
        page.locator("#ctl-momentum").focus()
        step = int(page.inner_text("#step"))
        page.wait_for_function(
            f"Number(document.querySelector('#step').textContent) > {step + 5}", timeout=10_000
        )
        assert page.input_value("#ctl-lr") == "0.5"
        assert page.inner_text("#cur-lr") == "0.03125"
    finally:
        page.close()
    assert errors == []


def test_an_answered_upload_joins_the_occlusion_list_at_once(
    browser: Any, served: tuple[DashboardServer, FakeTrainer], tmp_path: Path
) -> None:
    page, errors = open_page(browser, served[0], "live")
    try:
        # the fake's two test images
        page.wait_for_function("document.querySelectorAll('#occ-image option').length >= 2")
        assert values(page, "#occ-image option") == ["test:0", "test:1"]
        rgb = np.zeros((12, 12, 3), dtype=np.uint8)
        rgb[:, :6, 0] = 255
        path = tmp_path / "half-red.png"
        Image.fromarray(rgb).save(path)
        page.set_input_files("#upload-file", str(path))
        page.click("#upload-btn")
        page.wait_for_selector("#upload-state.ok", timeout=15_000)
        # no focus, no click on the list: it is read again when the trainer answered
        page.wait_for_function(
            "document.querySelectorAll('#occ-image option').length === 3", timeout=5_000
        )
        first = page.locator("#occ-image option").first
        ident = first.get_attribute("value")
        assert ident is not None and ident.startswith("upload:") and int(ident.split(":")[1]) >= 1
        assert values(page, "#occ-image option")[1:] == ["test:0", "test:1"]
        assert first.inner_text() == f"upload #{ident.split(':')[1]}: half-red.png"
        assert page.input_value("#occ-image") == ident  # the image just sent is the one chosen
        # the help text names the section as the page does
        assert page.inner_text("#upload-box h2") == "Try an image"
        note = page.locator("#occlusion-box p.note").first.inner_text()
        assert note.startswith('To occlude your own file, send it under "Try an image" above')
        assert "Your own image" not in page.inner_text("body")
    finally:
        page.close()
    assert errors == []


def test_header_wraps_inside_its_bar_at_390_px(
    browser: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    page, errors = open_page(browser, served[0], "recorded", width=390, height=844)
    try:
        page.wait_for_timeout(400)  # the charts follow their cards' widths (a resize observer)
        assert page.evaluate("document.documentElement.scrollWidth") == 390  # no sideways scroll
        bar = page.locator("#top").bounding_box()
        assert bar["x"] == 0 and bar["width"] == 390
        for sel in (".brand", ".picker", "#status", "a.help"):
            box = page.locator(f"#top {sel}").bounding_box()
            assert box["x"] >= bar["x"] and box["x"] + box["width"] <= bar["x"] + bar["width"], (
                sel,
                box,
            )
            assert box["y"] >= bar["y"] and box["y"] + box["height"] <= bar["y"] + bar["height"], (
                sel,
                box,
            )
        # the link is light on the header's dark bar: WCAG contrast of at least 4.5:1
        fg, bg = page.evaluate(
            "[getComputedStyle(document.querySelector('#top a.help')).color, getComputedStyle(document.querySelector('#top')).backgroundColor]"
        )
        assert contrast(fg, bg) >= 4.5, (fg, bg)
        page.screenshot(path="/tmp/dash-fixes-header-390.png")
    finally:
        page.close()
    assert errors == []


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two CSS rgb()/rgba() colours."""

    def luminance(css: str) -> float:
        r, g, b = (
            int(float(v)) / 255 for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3]
        )
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_narrow_axis_ticks_differ(
    browser: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    page, errors = open_page(browser, served[0], "recorded")
    try:
        page.wait_for_function(
            "(document.querySelector('#chart-loss').dataset.ticksY2 || '[]') !== '[]'"
        )
        labels = json.loads(page.get_attribute("#chart-loss", "data-ticks-y2"))
        shown = [s for s in labels if s]
        assert len(shown) >= 3, labels
        assert len(set(shown)) == len(shown), labels  # no two ticks read alike
        nums = [float(s) for s in shown]
        assert nums == sorted(nums) and all(0.0271 <= v <= 0.0272 for v in nums), labels
        assert all(len(s.split(".")[1]) == len(shown[0].split(".")[1]) >= 5 for s in shown), labels
        # the formatter itself: the increment's decimals (0.25 -> 2), exponent notation when tiny
        got = page.evaluate("""import('/static/js/charts.js').then((m) => [
            m.tickLabels([0.02712, 0.02714, 0.02716], 0.00002), m.tickLabels([0, 0.25, 0.5, 0.75, 1], 0.25),
            m.tickLabels([0, 100, 200], 100), m.tickLabels([0.0004, 0.00045, 0.0005], 0.00005),
            m.tickLabels([-0.1, 1e-17, 0.1], 0.1)])""")
        assert got == [["0.02712", "0.02714", "0.02716"], ["0.00", "0.25", "0.50", "0.75", "1.00"], ["0", "100", "200"],
                       ["4.0e-4", "4.5e-4", "5.0e-4"], ["-0.1", "0.0", "0.1"]]  # fmt: skip
    finally:
        page.close()
    assert errors == []


def test_paused_run_says_paused_everywhere(
    browser: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    page, errors = open_page(browser, served[0], "live")
    picker = "document.querySelector('#run-select').selectedOptions[0].textContent"
    try:
        page.wait_for_function("document.querySelector('#status').textContent === 'running'")
        page.wait_for_function(
            "/^[0-9,]+$/.test(document.querySelector('#eps').textContent)", timeout=10_000
        )
        assert page.evaluate(picker) == "live — running — zoo:fixture-net"
        page.click("#pause-btn")
        try:
            page.wait_for_function(
                "document.querySelector('#status').textContent === 'paused'", timeout=10_000
            )
            assert page.inner_text("#eps") == "paused"
            assert page.evaluate(picker) == "live — paused — zoo:fixture-net"
            # the trainer keeps committing while paused: the later steps' events keep it so
            page.wait_for_timeout(600)
            assert page.inner_text("#eps") == "paused"
            assert page.evaluate(picker) == "live — paused — zoo:fixture-net"
        finally:
            page.click("#pause-btn")
        page.wait_for_function(
            "document.querySelector('#status').textContent === 'running'", timeout=10_000
        )
        page.wait_for_function(
            "/^[0-9,]+$/.test(document.querySelector('#eps').textContent)", timeout=10_000
        )
        assert page.evaluate(picker) == "live — running — zoo:fixture-net"
    finally:
        page.close()
    assert errors == []


def test_screenshots_after_the_fixes(
    browser: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    for width, height in ((320, 640), (390, 844), (1280, 800)):
        page, errors = open_page(browser, served[0], "live", width=width, height=height)
        try:
            page.wait_for_function("document.querySelector('#status').textContent === 'running'")
            page.wait_for_timeout(500)
            assert page.evaluate("document.documentElement.scrollWidth") == width
            # the Controls grid and the file field stay inside the window (at 320 px they did not)
            wider = page.evaluate(
                "[...document.querySelectorAll('#controls *, #upload-box *')].filter(e => e.getClientRects().length"
                " && e.getBoundingClientRect().right > window.innerWidth).map(e => e.id || e.tagName)"
            )
            assert wider == []
            page.screenshot(path=f"/tmp/dash-fixes-{width}.png")
        finally:
            page.close()
        assert errors == []
