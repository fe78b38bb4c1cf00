"""The dashboard's controls with bad input, in Debian's chromium over a real built-in trainer: each
problem is said once, beside its control, in the user's words (not a toast, not the API's words);
an empty layer spec and an unpicked zoo net are not sent; a spec's error names its line; the
checkpoint list names each checkpoint's net, disables those of another net and selects the one
just saved; the embedding's images field has the server's bounds; the t-SNE map is centred.
Screenshot: /tmp/dash-controls-inputs.png."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from server.fakerun import ThreadedTrainer, dashboard_over

from convscope.config import TrainConfig
from convscope.server import DashboardServer
from convscope.train import Trainer

pytestmark = pytest.mark.browser

SPEC = "conv 4 3 pad 1 relu\npool 2\nfc 10"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    root = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(train_size=256, val_size=64, test_images=4, batch_size=16, val_every=50, lr=0.01, snapshot_every=0.5)
    with dashboard_over(root, ThreadedTrainer(Trainer(cfg, root / "live")).start()) as server:
        yield server


@pytest.fixture
def page(browser: Any, served: DashboardServer) -> Iterator[Any]:
    # bypass_csp: evaluate() runs code in the page (the CSP is tested in test_security_page.py)
    p = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.goto(served.url + "#run=live")
    p.locator("#apply-lr:not([disabled])").wait_for(timeout=60_000)
    yield p
    p.close()
    assert errors == []


def _until(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _options(page: Any, sel: str) -> list[str]:
    return page.eval_on_selector_all(sel + " option", "els => els.map((e) => e.textContent + (e.disabled ? ' [off]' : ''))")


def test_a_bad_number_is_said_beside_its_field(page: Any) -> None:
    _until(lambda: page.input_value("#ctl-lr") == "0.01", "the lr in effect")
    page.fill("#ctl-lr", "abc")
    page.click("#apply-lr")
    assert page.inner_text("#ack-lr") == "not a number: abc"
    assert page.input_value("#ctl-lr") == "abc"  # what was typed stays to be corrected
    page.fill("#ctl-lr", "0,5")
    page.click("#apply-lr")
    assert page.inner_text("#ack-lr") == "not a number: 0,5 (write a point: 0.5)"
    page.fill("#ctl-lr", "")
    page.click("#apply-lr")
    assert page.inner_text("#ack-lr") == "type a learning rate first"
    page.fill("#ctl-lr", "1e9")
    page.click("#apply-lr")
    _until(lambda: "refused" in page.inner_text("#ack-lr"), "the server's answer")
    # the new message replaced the last one: one line, and no toast
    assert page.inner_text("#ack-lr") == "refused: lr must be 0 < lr <= 10; got 1000000000 — still 0.01"
    assert page.locator("#messages > *").count() == 0
    page.locator("#controls").screenshot(path="/tmp/dash-controls-inputs.png")


def test_the_embedding_images_field_has_the_servers_bounds(page: Any) -> None:
    n = page.locator("#emb-n")
    assert (n.get_attribute("min"), n.get_attribute("max"), n.get_attribute("step")) == ("4", "1000", "1")
    for typed, said in (("0", " (not 0)"), ("1", " (not 1)"), ("5000", " (not 5000)"), ("", "")):
        n.fill(typed)
        page.click("#emb-go")
        assert page.inner_text("#emb-state") == f"images: type a whole number from 4 to 1000{said}"
    n.click(click_count=3)
    page.keyboard.type("abc")  # chromium's number field takes none of it: read as empty
    page.click("#emb-go")
    assert page.inner_text("#emb-state") == "images: type a whole number from 4 to 1000"
    assert page.eval_on_selector("#emb-state", "e => e.className") == "ack bad"


def test_the_map_is_centred_in_its_canvas(page: Any) -> None:
    # a map twice as wide as tall: 492 px across (520 − 2 × 14), 246 px high, centred vertically
    got = page.evaluate(
        """async () => { const { mapScale } = await import('/static/js/embedding.js');
        const at = mapScale([[0, 0], [2, 1], [1, 0.5]]); return [at([0, 0]), at([2, 1]), at([1, 0.5])]; }"""
    )
    assert got == [[14, 383], [506, 137], [260, 260]]
    got = page.evaluate(  # taller than wide: centred across
        """async () => { const { mapScale } = await import('/static/js/embedding.js');
        const at = mapScale([[0, 0], [1, 4]]); return [at([0, 0]), at([1, 4])]; }"""
    )
    assert got == [[198.5, 506], [321.5, 14]]


def test_layer_spec_errors_name_the_line_and_empty_is_not_sent(page: Any) -> None:
    page.click("#controls details summary")
    sent = page.locator("#ctl-log li").count()
    page.fill("#spec-text", "  \n# nothing\n")
    page.click("#spec-apply")
    assert page.inner_text("#ack-model") == "the layer spec is empty: write one layer per line, e.g. conv 8 3 relu, pool 2, fc 10"
    assert page.locator("#ctl-log li").count() == sent  # nothing went to the server
    page.fill("#spec-text", "conv 8 3 relu\nbanana 3\nfc 10")
    page.click("#spec-apply")
    _until(lambda: "refused" in page.inner_text("#ack-model"), "the server's answer")
    assert page.inner_text("#ack-model") == "refused: line 2: 'banana' is not a layer (conv, pool, fc, dropout)"
    page.fill("#spec-text", "conv 8 3 relu\n\nconv ten 3 relu\nfc 10")  # words the server passes: the trainer parses
    page.click("#spec-apply")
    _until(lambda: "refused by the trainer" in page.inner_text("#ack-model"), "the trainer's answer")
    assert page.inner_text("#ack-model") == (
        "refused by the trainer: line 3: 'ten' is not a whole number "
        "(conv FILTERS SIZE [stride S] [pad P] [ACT], e.g. 'conv 16 5 pad 2 relu')"
    )


def test_a_layer_spec_net_leaves_no_zoo_net_picked_and_old_checkpoints_off(page: Any) -> None:
    _until(lambda: page.locator("#ckpt-select option[value='evo-000001']").count(), "the first checkpoint")
    assert _options(page, "#ckpt-select")[0] == "evo-000001 (step 0, convnetjs-cifar)"
    before = page.eval_on_selector_all("#ckpt-select option", "els => els.map((e) => e.value)")
    assert all(v.startswith("evo-") for v in before)  # the trainer's evolution checkpoints: evo-STEP+1
    page.click("#controls details summary")
    page.fill("#spec-text", SPEC)
    page.click("#spec-apply")
    _until(lambda: page.inner_text("#ack-model").startswith("✓ restarted with the edited layer spec"), "the restart")
    _until(lambda: page.input_value("#zoo-select") == "", "the zoo list without a pick")
    assert _options(page, "#zoo-select")[0] == "(a layer spec trains: pick a zoo net)"
    assert page.is_disabled("#zoo-apply")
    page.click("#zoo-apply", force=True)  # a disabled button: nothing happens
    assert page.inner_text("#ack-model").startswith("✓ restarted")
    page.select_option("#zoo-select", "tiny-vgg")
    assert page.is_enabled("#zoo-apply")
    # the old net's checkpoints stay listed, marked and off; those the new net saved since are on.
    # The old net trains on until the restart is applied, so it may save more after `before` was
    # read (evo-000020 at its step 19): the new net's first step S saves evo-(S+1), and every evo
    # checkpoint below that one is the old net's, those in `before` among them.
    def marked() -> bool:
        rows = page.eval_on_selector_all("#ckpt-select option", "els => els.map((e) => [e.value, e.textContent, e.disabled])")
        new = [v for v, text, _ in rows if v.startswith("evo-") and text.endswith(", layer spec)")]
        if not new:
            return False  # (the new net's first checkpoint: the boundary)
        first_new = min(int(v[4:]) for v in new)
        if max(int(v[4:]) for v in before) >= first_new:
            raise AssertionError(f"a checkpoint listed before the restart is called the new net's: {rows}")
        for value, text, off in rows:
            if value.startswith("evo-") and int(value[4:]) < first_new:  # evo-STEP+1 holds the weights of step STEP
                want = (f"{value} (step {int(value[4:]) - 1}, convnetjs-cifar) — does not fit the net training now", True)
            elif value:
                want = (text if text.endswith(", layer spec)") else "a layer spec's checkpoint", False)
            else:
                continue  # "(none fits the net training now)" while the new net has saved none
            if (text, off) != want:
                return False
        return True

    try:
        _until(marked, "the checkpoints marked", 30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_options(page, '#ckpt-select')}") from None
    page.fill("#ckpt-name", "mine")
    page.click("#ckpt-save")
    _until(lambda: page.input_value("#ckpt-select") == "mine", "the saved checkpoint selected")
    label = page.eval_on_selector("#ckpt-select", "s => s.selectedOptions[0].textContent")
    assert label.startswith("mine (step ") and label.endswith(", layer spec)")
    page.click("#emb-ckpt")
    _until(lambda: any(o.startswith("mine (step ") for o in _options(page, "#emb-ckpt")), "the embedding's list")
    off = [o for o in _options(page, "#emb-ckpt") if o.endswith("[off]")]
    assert off and all(", convnetjs-cifar) — does not fit the net training now [off]" in o for o in off)
