"""The live dashboard in Debian's chromium (Playwright), served by uvicorn in a thread on a free
127.0.0.1 port, over a fake trainer that commits steps, obeys pause and lr, and answers uploads
through the run store only. Screenshots go to /tmp/dash-*.png."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image
from server.fakerun import (
    FakeTrainer,
    dashboard_over,
    fixture_writer,
    scalars_of,
    write_fixture_run,
)

from convscope.config import ServeConfig
from convscope.runs import RunReader, RunWriter
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp")


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DashboardServer, FakeTrainer]]:
    root = tmp_path_factory.mktemp("runs")
    write_fixture_run(root, "finished-fixture")
    trainer = FakeTrainer(root / "live", step_s=0.05, snapshot_every=5).start()
    with dashboard_over(root, trainer) as server:
        yield server, trainer


@pytest.fixture
def page(browser: Any, served: tuple[DashboardServer, FakeTrainer]) -> Iterator[Any]:
    server, _ = served
    # bypass_csp: Playwright's wait_for_function evals its predicate in the page, which the
    # page's CSP forbids; the CSP itself is tested in test_security_page.py
    p = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.goto(server.url + "#run=live")
    p.wait_for_function("document.querySelector('#status').textContent === 'running'")
    p.wait_for_selector("article.layer[data-layer=conv1] img.kind-a[src]")
    p.wait_for_function("document.querySelectorAll('.uplot').length === 4")
    yield p
    p.close()
    assert errors == []


def wait_until(check: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pixels(page: Any, src: str) -> np.ndarray:
    res = page.request.get(urljoin(page.url, src))
    assert res.status == 200 and res.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(res.body())).convert("RGB"))


def test_page_loads_with_everything_and_no_console_error(page: Any) -> None:
    assert page.locator("article.layer").count() == 2
    assert page.locator(".uplot").count() == 4  # loss, accuracy, update ratio, dead fraction
    card = page.locator("article.layer[data-layer=conv1]")
    facts = card.locator(".facts").inner_text()
    assert "output 4 × 8 × 8" in facts and "filters 3 × 3, stride 1 × 1" in facts
    assert "112 parameters = 4 × (3 × 3 × 3) + 4" in facts
    captions = card.locator("figcaption").all_inner_texts()
    for words in (
        "a = f(z)",
        "dL/da",
        "W",
        "dL/dW",
        "summed over the batch",
        "z | a",
        "one 0-centred scale",
    ):
        assert any(words in c for c in captions), words
    assert "activation map = feature map" in page.inner_text("#glossary")
    page.wait_for_selector("#predictions .pred")
    assert page.locator("#predictions .pred.correct").count() == 1
    assert "✓ cat 75.0%" in page.locator("#predictions .pred").first.inner_text()
    page.wait_for_function("Number(document.querySelector('#step').textContent) > 0")
    assert page.inner_text("#cur-lr") == "0.125"
    assert not page.is_visible("#ctl-log-box")  # nothing sent yet: no empty "sent to the trainer" list
    assert page.locator("article.layer img[src]").count() >= 9
    page.wait_for_function(  # every picture decodes (they keep changing: live)
        "[...document.querySelectorAll('article.layer img[src]')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(SHOTS / "dash-live.png"), full_page=True)


def test_layer_images_change_while_training(page: Any) -> None:
    img = page.locator("article.layer[data-layer=conv1] img.kind-a")
    step = int(img.get_attribute("data-step"))
    first = pixels(page, img.get_attribute("src"))
    changed = False
    for _ in range(6):  # the fake's maps change with the step, but two steps may quantise alike
        page.wait_for_function(
            f"Number(document.querySelector('article.layer[data-layer=conv1] img.kind-a').dataset.step) > {step}",
            timeout=10_000,
        )
        page.wait_for_function(
            "(() => { const i = document.querySelector('article.layer[data-layer=conv1] img.kind-a');"
            " return i.getAttribute('src').includes('step=' + i.dataset.step) && i.complete; })()"
        )
        step = int(img.get_attribute("data-step"))
        later = pixels(page, img.get_attribute("src"))
        if first.shape != later.shape or not np.array_equal(first, later):
            changed = True
            break
    assert changed, "the activation picture never changed while steps were committed"


def test_pause_stops_the_step_counter_and_resume_restarts_it(
    page: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    _, trainer = served
    page.click("#pause-btn")
    try:
        page.wait_for_function(
            "document.querySelector('#status').textContent === 'paused'", timeout=10_000
        )
        page.wait_for_function(
            "document.querySelector('#pause-state').textContent.includes('in effect from step')"
        )
        assert page.inner_text("#pause-btn") == "Resume"
        shown = page.inner_text("#step")
        at = trainer.step
        time.sleep(1.0)
        assert trainer.step == at  # the trainer did not step
        assert page.inner_text("#step") == shown  # and the page shows the counter stopped
        page.screenshot(path=str(SHOTS / "dash-paused.png"))
    finally:
        page.click("#pause-btn")
    page.wait_for_function(
        "document.querySelector('#status').textContent === 'running'", timeout=10_000
    )
    page.wait_for_function(
        f"Number(document.querySelector('#step').textContent) > {shown}", timeout=10_000
    )


def test_new_learning_rate_reaches_the_trainer(
    page: Any, served: tuple[DashboardServer, FakeTrainer]
) -> None:
    _, trainer = served
    page.fill("#ctl-lr", "0.03125")
    page.click("#apply-lr")
    page.wait_for_function(
        "document.querySelector('#ack-lr').textContent.includes('in effect from step')", timeout=10_000
    )
    with RunReader(trainer.path) as r:
        [ctrl] = [c for c in r.controls() if c["key"] == "lr"]
        assert ctrl["value"] == 0.03125 and ctrl["result"] == {"ok": True, "lr": 0.03125}
        applied = ctrl["applied_step"]
        wait_until(lambda: (r.last_step() or 0) > applied + 1, what="two more steps")
        logged = r.scalars(["lr"], since=applied)["lr"]
    assert logged and all(v == 0.03125 for _, v in logged)
    page.wait_for_function(
        "document.querySelector('#cur-lr').textContent === '0.03125'", timeout=10_000
    )
    assert "learning rate = 0.03125 — ✓ step" in page.inner_text("#ctl-log")
    assert page.is_visible("#ctl-log-box")


def test_upload_shows_predictions_and_maps(page: Any, tmp_path: Path) -> None:
    rgb = np.zeros((30, 20, 3), dtype=np.uint8)
    rgb[:, :, 1] = np.linspace(0, 255, 20, dtype=np.uint8)[None, :]
    path = tmp_path / "mine.png"
    Image.fromarray(rgb).save(path)
    page.set_input_files("#upload-file", str(path))
    page.click("#upload-btn")
    page.wait_for_selector("#upload-result .top3", timeout=15_000)
    assert "car 62.5%" in page.inner_text("#upload-result")
    page.wait_for_function(
        "[...document.querySelectorAll('#upload-maps img')].length === 4 &&"
        " [...document.querySelectorAll('#upload-maps img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator("#upload-result img").evaluate("i => i.naturalWidth") == 96
    page.locator("#upload-box").screenshot(path=str(SHOTS / "dash-upload.png"))


def test_timeline_scrubs_back_to_earlier_filters_and_compares(page: Any) -> None:
    page.wait_for_function("window.convscope.steps.length >= 3")
    steps = page.evaluate("window.convscope.steps")
    weights = page.locator("article.layer[data-layer=conv1] img.kind-weight")
    page.wait_for_function(
        "(() => { const i = document.querySelector('article.layer[data-layer=conv1] img.kind-weight');"
        " return i.complete && i.naturalWidth > 0; })()"
    )
    page.eval_on_selector(
        "#timeline", "e => { e.value = '0'; e.dispatchEvent(new Event('input')); }"
    )
    assert not page.is_checked("#live")
    page.wait_for_function(
        f"document.querySelector('article.layer[data-layer=conv1] img.kind-weight').getAttribute('src').includes('step={steps[0]}&')"
    )
    early_src = weights.get_attribute("src")
    assert weights.get_attribute("data-step") == str(steps[0])
    assert f"step {steps[0]} (1 of" in page.inner_text("#timeline-step")
    later_step = page.evaluate("window.convscope.steps.at(-1)")
    early = pixels(page, early_src)
    late = pixels(page, early_src.replace(f"step={steps[0]}&", f"step={later_step}&"))
    assert not np.array_equal(early, late)  # the filters evolved
    page.check("#compare")
    pair = page.locator("article.layer[data-layer=conv1] figure[data-kind=weight] img")
    assert pair.count() == 2
    page.eval_on_selector(
        "#timeline-b",
        f"e => {{ e.value = '{len(steps) - 1}'; e.dispatchEvent(new Event('input')); }}",
    )
    page.wait_for_function(
        "(() => { const i = document.querySelectorAll('article.layer[data-layer=conv1] figure[data-kind=weight] img');"
        f" return i.length === 2 && i[1].dataset.step === '{steps[-1]}' && i[0].dataset.step === '{steps[0]}'; }})()"
    )
    page.locator("article.layer[data-layer=conv1]").screenshot(path=str(SHOTS / "dash-compare.png"))
    page.check("#live")
    page.wait_for_function(f"Number(window.convscope.stepA) > {steps[0]}")


def test_finished_run_turns_the_controls_off(page: Any) -> None:
    page.select_option("#run-select", "finished-fixture")
    page.wait_for_function("document.querySelector('#status').textContent === 'finished'")
    assert page.is_disabled("#apply-lr") and page.is_disabled("#pause-btn")
    assert "finished" in page.inner_text("#controls-note")
    page.wait_for_selector("#findings li >> text=1 of 4 filters dead")
    assert "step 2" in page.inner_text("#findings")
    assert "the learning rate may be too high" in page.inner_text("#findings")
    flag = page.locator("article.layer[data-layer=conv1] .flag")  # flagged on the layer card too
    assert (
        flag.count() == 1
        and flag.inner_text() == "dead 3"
        and "1 of 4 filters dead" in flag.get_attribute("title")
    )
    page.wait_for_selector("article.layer[data-layer=conv1] img.kind-a[src]")
    page.screenshot(path=str(SHOTS / "dash-finished.png"), full_page=True)


def test_token_page_and_watch_run(browser: Any, tmp_path: Path) -> None:
    """A server with a token: the page opened with ?token=... loads everything (the token is
    exchanged for a cookie, test_security_page.py); a convscope.watch run offers pause only."""
    writer = fixture_writer(tmp_path, "mine", trainer="watch")  # live: status running
    server = DashboardServer(tmp_path, ServeConfig(port=0, token="t0ken-for-test")).start()
    p = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    try:
        bare = p.request.get(server.url.split("?")[0] + "api/runs")
        assert bare.status == 401
        p.goto(server.url)
        p.wait_for_function("document.querySelector('#status').textContent === 'running'")
        assert "convscope.watch" in p.inner_text("#controls-note")
        assert p.is_disabled("#apply-lr") and p.is_disabled("#ckpt-save")
        assert not p.is_disabled("#pause-btn")
        p.wait_for_function(
            "[...document.querySelectorAll('article.layer img')].length >= 9 &&"
            " [...document.querySelectorAll('article.layer img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert "token" not in p.locator("article.layer img").first.get_attribute("src")
        p.screenshot(path=str(SHOTS / "dash-watch.png"))
    finally:
        p.close()
        server.stop()
        writer.close()
    assert errors == []
    assert isinstance(writer, RunWriter)


def test_controls_are_off_while_the_trainer_is_not_responding(browser: Any, tmp_path: Path) -> None:
    """Issue 7 case 9, the page's side: a live run whose trainer stops committing and polling
    (killed, hung) shows "trainer not responding" and its controls go off with the reason; they
    come back when the trainer does."""
    from playwright.sync_api import expect

    writer = fixture_writer(tmp_path, "quiet")  # status running; nobody commits after step 2
    server = DashboardServer(tmp_path, ServeConfig(port=0, poll_s=0.2, stale_after_s=1.5)).start()
    p = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    beats = threading.Event()

    def trainer_is_back() -> None:
        step = 3
        while not beats.is_set():
            writer.log_scalars(step, scalars_of(step))
            writer.commit(step)
            step += 1
            time.sleep(0.2)

    try:
        p.goto(server.url + "#run=quiet")  # locators and expect(): no eval under the page's CSP
        expect(p.locator("#status")).to_have_text("trainer not responding", timeout=10_000)
        expect(p.locator("#controls-note")).to_have_attribute("data-reason", "stale")
        for sel in (
            "#pause-btn",
            "#apply-lr",
            "#ctl-lr",
            "#zoo-apply",
            "#spec-apply",
            "#ckpt-save",
            "#upload-btn",
        ):
            assert p.is_disabled(sel), sel
        note = p.inner_text("#controls-note")
        assert note.startswith("The trainer is not responding") and "controls are off" in note
        assert p.is_visible("#controls-note")
        p.screenshot(path=str(SHOTS / "dash-not-responding.png"))

        thread = threading.Thread(target=trainer_is_back, daemon=True)
        thread.start()
        expect(p.locator("#status")).to_have_text("running", timeout=10_000)
        expect(p.locator("#apply-lr")).to_be_enabled()
        expect(p.locator("#upload-btn")).to_be_enabled()
        assert not p.is_disabled("#pause-btn") and not p.is_visible("#controls-note")
        beats.set()
        thread.join()
    finally:
        beats.set()
        p.close()
        server.stop()
        writer.close()
    assert errors == []
