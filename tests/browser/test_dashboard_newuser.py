"""Issue 9 §1 on the live dashboard in Debian's chromium: what a new user met. A fake built-in
trainer (a thread writing the run store as the real one does) obeys every control, restarts
with another net on a `model` control, and writes per-step rates that jump (100 and 1,000
examples/s in turn) so the windowed numbers have one exact answer.

  items 2/7  accuracy shown; after a restart the header's per-net numbers start afresh, every
             chart marks the restart, the control says which net it got
  item 6     a refused value leaves its field (the value in effect comes back); every setting in
             effect is shown; a new value clears the old error
  item 8     maps say they are of a fixed held-out image; the charts mark the scrubbed step
  item 9     windowed examples/s and forward/backward time, smoothed loss beside the raw one,
             weight-decay loss on its own axis
  item 13    x drawn as the colour image, the classes said plainly, held-out crops offered first
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest
import torch
from PIL import Image
from server.fakerun import (
    CONFIG,
    LAYERS,
    META,
    PREDICTIONS,
    dashboard_over,
    sample_images,
    stats_of,
)

from convscope.runs import RunWriter
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

MEAN, STD = [0.5, 0.25, 0.75], [0.25, 0.5, 0.125]  # the fake's input normalisation (exact in float16)
OTHER_LAYERS = [{**LAYERS[0], "name": "conv1"}, {**LAYERS[1], "name": "fc2"}]  # the "other-net"


def rate_of(step: int) -> float:
    return 100.0 if step % 2 else 1000.0


def fwd_of(step: int) -> float:
    return 0.5 if step % 2 else 1.5


class Trainer:
    """A stand-in for the built-in trainer: steps, controls, restarts (see the module docstring)."""

    def __init__(self, path: Path, *, step_s: float = 0.03) -> None:
        self.writer = RunWriter(path, config=CONFIG, meta={**META, "input_mean": MEAN, "input_std": STD,
                                                          "snapshot_example": "probe"})  # fmt: skip
        self.settings: dict[str, float] = {k: float(v) for k, v in CONFIG.items()}
        self.step = 0
        self.net = "fixture-net"
        self.net_start = 0
        self.new_layers: list[dict[str, Any]] | None = None
        self.step_s = step_s
        self.paused = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Trainer:
        self.writer.log_json(0, "layers", LAYERS)
        self.writer.log_snapshot(0, "_test", "input", sample_images())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.writer.close(status="stopped")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.paused:
                    self._write_step(self.step)
                    self.step += 1
                self._controls()
                time.sleep(self.step_s)
        except BaseException as err:  # the fixture reads it
            self.error = err
            raise

    def _write_step(self, step: int) -> None:
        w = self.writer
        if self.new_layers is not None:
            w.log_json(step, "layers", self.new_layers)
            self.new_layers = None
        since = step - self.net_start  # the new net learns from scratch
        w.log_scalars(step, {
            "loss": 1.5 if step % 2 else 0.5, "wd_loss": 0.0625, "train_acc": 0.125 if self.net != "fixture-net" else 0.875,
            "examples": 4.0 * (step + 1), "examples_per_s": rate_of(step), "fwd_ms_per_example": fwd_of(step),
            "bwd_ms_per_example": 2 * fwd_of(step), **self.settings,
        })  # fmt: skip
        if since % 5 == 0 and since > 0 and self.net == "fixture-net":
            w.log_scalars(step, {"val_acc": 0.902})  # the old net's validation accuracy only
        if since % 5 == 0:
            w.log_json(step, "predictions", PREDICTIONS)
        for layer in ("conv1", "fc" if self.net == "fixture-net" else "fc2"):
            w.log_layer_stats(step, layer, {**stats_of(step, "conv1"), "update_ratio": 1e-3})
        if step % 5 == 0:
            x = ((sample_images()[:1] - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
            z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(step))
            w.log_snapshot(step, "conv1", "x", x)
            w.log_snapshot(step, "conv1", "z", z)
            w.log_snapshot(step, "conv1", "a", z.clamp_min(0))
            w.log_snapshot(step, "conv1", "grad_a", z * 0.01)
            w.log_snapshot(step, "conv1", "weight", torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(step)))
        w.set_meta("status", "paused" if self.paused else "running")
        w.commit(step)

    def _controls(self) -> None:
        w = self.writer
        for c in w.poll_controls():
            result: dict[str, Any] = {"ok": True}
            if c.key in ("pause", "resume"):
                self.paused = c.key == "pause"
            elif c.key in self.settings:
                self.settings[c.key] = float(c.value)
                result[c.key] = float(c.value)
            elif c.key == "model":
                self.net, self.net_start = str(c.value), self.step
                self.new_layers = OTHER_LAYERS if self.net != "fixture-net" else LAYERS  # with the next step
                w.set_meta("model", self.net)
                result["model"] = str(c.value)
            elif c.key == "predict":
                result["top"] = [[2, "car", 0.625], [0, "cat", 0.25], [1, "dog", 0.125]]
                w.log_json(max(self.step - 1, 0), f"upload:{c.id}", {"top": result["top"], "layers": []})
            w.ack_control(c.id, self.step, result=result)
            if c.key == "predict":
                w.commit(max(self.step - 1, 0))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DashboardServer, Trainer]]:
    root = tmp_path_factory.mktemp("runs")
    trainer = Trainer(root / "live").start()
    with dashboard_over(root, trainer) as server:
        yield server, trainer


@pytest.fixture
def page(browser: Any, served: tuple[DashboardServer, Trainer]) -> Iterator[Any]:
    server, _ = served
    p = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
    p.console_errors = errors  # type: ignore[attr-defined]  # a test may expect one
    p.goto(server.url + "#run=live")
    p.wait_for_function("document.querySelector('#status').textContent === 'running'")
    p.wait_for_selector("article.layer[data-layer=conv1] img.kind-a[src]")
    p.wait_for_function("document.querySelectorAll('.uplot').length === 4")
    yield p
    p.close()
    assert errors == []


def text_is(page: Any, sel: str, want: str, timeout: int = 10_000) -> None:
    from playwright.sync_api import expect

    expect(page.locator(sel)).to_have_text(want, timeout=timeout)


def marks(page: Any, chart: str) -> list[dict[str, Any]]:
    raw = page.locator(f"#chart-{chart}").get_attribute("data-marks")
    return list(json.loads(raw)) if raw else []


def test_windowed_rates_smoothed_loss_and_weight_decay_axis(page: Any) -> None:
    page.wait_for_function("window.convscope.scalars.get('examples').size > 60")
    # 25 steps at 100/s and 25 at 1,000/s, 4 examples each: 200 examples in 2.2 s, not a mean of rates
    text_is(page, "#eps", "182")
    text_is(page, "#fwd", "1 ms")  # 0.5 and 1.5 ms in turn
    text_is(page, "#bwd", "2 ms")
    # the raw loss jumps between 0.5 and 1.5; its moving average sits near 1 (the page's own EMA
    # recomputed here from the points it holds)
    smoothed = page.evaluate(
        """(() => { const m = window.convscope.scalars.get('loss'); const xs = [...m].sort((a, b) => a[0] - b[0]);
        let acc = 0, w = 0; for (const [, v] of xs) { acc = 0.95 * acc + 0.05 * v; w = 0.95 * w + 0.05; }
        return acc / w; })()"""
    )
    assert smoothed == pytest.approx(1.0, abs=0.05)
    assert float(page.inner_text("#loss-ema")) == pytest.approx(1.0, abs=0.05)
    assert page.inner_text("#loss") in ("0.5", "1.5")
    # the loss chart: raw, smoothed and the weight-decay loss on a second (right-hand) axis
    legend = page.locator("#chart-loss .u-legend").inner_text()
    assert "loss L" in legend and "loss L, smoothed" in legend and "weight-decay loss (right axis)" in legend
    assert page.locator("#chart-loss .u-axis").count() == 3


def test_settings_in_effect_and_a_refused_value_reverts(page: Any, served: tuple[DashboardServer, Trainer]) -> None:
    _, trainer = served
    text_is(page, "#cur-momentum", "0.5")
    text_is(page, "#cur-batch", "4")
    text_is(page, "#cur-wd", "0")
    assert page.input_value("#ctl-momentum") == "0.5"
    page.fill("#ctl-momentum", "1.5")
    page.click("#apply-momentum")
    page.wait_for_selector("#ack-momentum.bad")
    page.console_errors.remove("Failed to load resource: the server responded with a status of 400 (Bad Request)")
    ack = page.inner_text("#ack-momentum")
    assert "momentum must be 0 <= momentum < 1" in ack and ack.endswith("still 0.5")
    assert page.input_value("#ctl-momentum") == "0.5"  # the refused 1.5 left the field
    assert trainer.settings["momentum"] == 0.5
    page.fill("#ctl-momentum", "0.7")  # typing a new value clears the old error
    assert page.inner_text("#ack-momentum") == ""
    page.click("#apply-momentum")
    page.wait_for_selector("#ack-momentum.ok")
    text_is(page, "#cur-momentum", "0.7")
    page.fill("#ctl-weight_decay", "0.002")
    page.click("#apply-weight_decay")
    text_is(page, "#cur-wd", "0.002")
    assert trainer.settings["weight_decay"] == 0.002


def test_maps_of_a_fixed_image_x_in_colour_and_scrub_marks(page: Any) -> None:
    card = page.locator("article.layer[data-layer=conv1]")
    cap = card.locator("figure[data-kind=a] figcaption").inner_text()
    assert "a held-out image, the same at every step" in cap
    colour = card.locator("figure[data-kind=colour] img")
    colour.wait_for()
    page.wait_for_function(
        "document.querySelector('article.layer[data-layer=conv1] figure[data-kind=colour] img').naturalWidth > 0"
    )
    res = page.request.get(urljoin(page.url, colour.get_attribute("src")))
    got = np.asarray(Image.open(io.BytesIO(res.body())).convert("RGB"))
    want = (sample_images()[0].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)  # the picture itself
    factor = got.shape[0] // 8
    assert got.shape == (8 * factor, 8 * factor, 3) and factor >= 12
    assert np.abs(got[::factor, ::factor].astype(int) - want.astype(int)).max() <= 1  # float16 x, un-normalised
    # scrub: every chart marks the step the maps show
    page.wait_for_function("window.convscope.steps.length >= 3")
    first = page.evaluate("window.convscope.steps[0]")
    page.eval_on_selector("#timeline", "e => { e.value = '0'; e.dispatchEvent(new Event('input')); }")
    for chart in ("loss", "acc", "ratio", "dead"):
        page.wait_for_function(
            f"(document.querySelector('#chart-{chart}').dataset.marks || '').includes('\"step\":{first},')"
        )
        assert {"step": first, "label": "shown", "kind": "a"} in marks(page, chart)
    page.check("#compare")
    page.eval_on_selector("#timeline-b", "e => { e.value = '1'; e.dispatchEvent(new Event('input')); }")
    second = page.evaluate("window.convscope.steps[1]")
    # the B mark moves to the scrubbed step once the chart redraws (a loaded machine can lag)
    page.wait_for_function(
        "(document.querySelector('#chart-acc').dataset.marks || '').includes('\"step\":' + window.convscope.steps[1] + ',\"label\":\"B\"')"
    )
    assert {"step": second, "label": "B", "kind": "b"} in marks(page, "acc")
    page.check("#live")


def test_classes_said_and_held_out_crops_offered_first(page: Any) -> None:
    note = page.inner_text("#classes-note")
    assert "knows 3 classes only: cat, dog, car" in note and "out of distribution" in note
    crops = page.locator("#heldout button.crop")
    page.wait_for_function("document.querySelectorAll('#heldout button.crop').length === 2")  # the run has 2
    box_crops = crops.first.bounding_box()
    box_file = page.locator("#upload-file").bounding_box()
    assert box_crops["y"] < box_file["y"]  # offered before "your own file"
    crops.nth(1).click()
    page.wait_for_selector("#upload-result .top3", timeout=15_000)
    assert "car 62.5%" in page.inner_text("#upload-result")
    assert "top-3 of the classes it knows" in page.inner_text("#upload-result")


def test_restart_marks_charts_resets_numbers_and_names_the_net(
    page: Any, served: tuple[DashboardServer, Trainer]
) -> None:
    _, trainer = served
    text_is(page, "#val-acc", "90.2%")
    at = re.fullmatch(r"\(step (\d+)\)", page.inner_text("#val-at"))  # validation runs every 5 steps here
    assert at is not None and int(at[1]) > 0 and (int(at[1]) - trainer.net_start) % 5 == 0, page.inner_text("#val-at")
    text_is(page, "#train-acc", "87.5%")
    page.locator("details.model-box summary").click()
    page.select_option("#zoo-select", "other-net")
    page.click("#zoo-apply")
    page.wait_for_selector("#ack-model.ok", timeout=15_000)
    restart = trainer.net_start
    assert page.inner_text("#ack-model") == f"✓ restarted with other-net: its first step is {restart}"
    text_is(page, "#val-acc", "–")  # the old net's 90.2% is not this net's
    text_is(page, "#val-at", "")
    text_is(page, "#train-acc", "12.5%")
    for chart in ("loss", "acc", "ratio", "dead"):
        page.wait_for_function(f"(document.querySelector('#chart-{chart}').dataset.marks || '').includes('restart')")
        assert {"step": restart, "label": "restart: other-net", "kind": "restart"} in marks(page, chart)
    page.wait_for_selector("article.layer[data-layer=fc2]")
    # back to the first net: a zoo name is a zoo name
    page.select_option("#zoo-select", "fixture-net")
    page.click("#zoo-apply")
    page.wait_for_function(
        "document.querySelector('#ack-model').textContent.startsWith('✓ restarted with fixture-net')", timeout=15_000
    )
    page.reload()  # the restarts come back from the store, not from the page's memory
    page.wait_for_function("document.querySelectorAll('.uplot').length === 4")
    page.wait_for_function("(document.querySelector('#chart-loss').dataset.marks || '').includes('fixture-net')")
    labels = [m["label"] for m in marks(page, "loss") if m["kind"] == "restart"]
    assert labels == ["restart: other-net", "restart: fixture-net"]
