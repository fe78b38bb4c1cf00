"""What the recorder (convscope.watch's and the built-in trainer's) kept and skipped, on the page
(issue 10: "a recorder that skips work must say what it skipped, on the page and in the store"),
in Debian's chromium: the Training
card's line shows json "recording" exactly as the store holds it, follows a newer row while the
page is open, and stays hidden for a run that has none (written by hand with RunWriter)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from server.fakerun import fixture_writer
from torch import nn

from convscope import watch
from convscope.capture import count_hooks
from convscope.config import ServeConfig
from convscope.runs import RunReader
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser
BOX = "#recording"


def _open(browser: Any, server: DashboardServer, run: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}#run={run}")
    page.wait_for_function(f"document.querySelector('#run-select').value === {json.dumps(run)}")
    return page, errors


def _shown(page: Any, text: str) -> str:
    page.wait_for_function(
        f"!document.querySelector({json.dumps(BOX)}).hidden && "
        f"document.querySelector({json.dumps(BOX)}).textContent.includes({json.dumps(text)})"
    )
    return str(page.text_content(BOX))


def test_a_watched_runs_recording_is_on_the_training_card(browser: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay as they were
    with watch(model, tmp_path / "watched", commit_every=0.0) as run:
        for _ in range(12):
            x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 3, (4,))
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss)
    assert count_hooks(model) == 0 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with RunReader(tmp_path / "watched") as r:
        step, rec = r.json("recording")  # type: ignore[misc]
    assert step == 11 and rec["total"]["steps"] == 12  # the row written at close: the whole run
    server = DashboardServer(tmp_path, ServeConfig(port=0, poll_s=0.2)).start()
    try:
        page, errors = _open(browser, server, "watched")
        text = _shown(page, "whole run, to step 11")
        page.screenshot(path="/tmp/recording-line.png", full_page=False)
        width = page.evaluate("document.documentElement.scrollWidth")
        page.close()
    finally:
        server.stop()
    assert text.startswith("recorded (budget 3% of the step time)")
    assert text.endswith(f"whole run, to step 11: {rec['total_note']}")
    if rec["total_note"] != rec["note"]:  # (the same when no row was written before the one at close)
        assert re.search(rf"last \d+\.\d s, to step 11: {re.escape(rec['note'])}whole run", text)
    assert 0 < rec["window_s"] < 10  # (the row at close: since the last one, or the recorder's start)
    assert rec["total_note"].startswith("per-layer statistics on ") and " of 12 steps" in rec["total_note"]
    assert width <= 1280 and errors == []


def test_the_line_follows_a_newer_row_and_is_hidden_without_one(browser: Any, tmp_path: Path) -> None:
    w = fixture_writer(tmp_path, "live", trainer="watch")
    plain = fixture_writer(tmp_path, "builtin")  # (no "recording" row: the fixture writes none)
    plain.close(status="finished")
    older = fixture_writer(tmp_path, "older", trainer="watch")  # a row from before "total_note"
    older.log_json(2, "recording", {"budget": 0.03, "note": "per-layer statistics on 2 of 3 steps, all within the budget (measured: 1.0%)"})
    older.commit(2)
    older.close(status="finished")
    row = {"budget": 0.03, "note": "per-layer statistics on 1 of 3 steps, to keep recording within 3% of the step "
           "time (measured: 2.9%)", "total_note": "per-layer statistics on 1 of 3 steps, to keep recording within 3% "
           "of the step time (measured: 2.9%)"}  # fmt: skip
    w.log_json(2, "recording", row)
    w.commit(2)
    server = DashboardServer(tmp_path, ServeConfig(port=0, poll_s=0.2)).start()
    try:
        page, errors = _open(browser, server, "live")
        first = _shown(page, "1 of 3 steps")
        later = {"budget": 0.03, "note": "per-layer statistics on 2 of 2 steps; 1 snapshot, all within the budget "
                 "(measured: 1.5%)", "total_note": "per-layer statistics on 3 of 5 steps; 1 snapshot, to keep "
                 "recording within 3% of the step time (measured: 2.4%)"}  # fmt: skip
        w.log_scalars(4, {"loss": 0.5})
        w.log_json(4, "recording", later)
        w.commit(4)
        second = _shown(page, "3 of 5 steps")  # pushed by the live channel, no reload
        w.log_scalars(5, {"loss": 0.4})
        w.log_json(5, "recording", {**later, "total_note": later["total_note"].replace("5 steps", "6 steps"), "window_s": 1.96})
        w.commit(5)
        timed = _shown(page, "3 of 6 steps")  # a row that says how long its window was
        page.select_option("#run-select", "older")
        third = _shown(page, "2 of 3 steps")
        page.select_option("#run-select", "builtin")
        page.wait_for_function("document.querySelector('#step').textContent === '2'")
        hidden = page.evaluate(f"document.querySelector({json.dumps(BOX)}).hidden")
        page.close()
    finally:
        server.stop()
        w.close(status="finished")
    assert first == f"recorded (budget 3% of the step time)whole run, to step 2: {row['note']}"  # (the same twice: once)
    assert second == (
        "recorded (budget 3% of the step time)"
        f"last ~2 s, to step 4: {later['note']}whole run, to step 4: {later['total_note']}"
    )
    assert timed.startswith(f"recorded (budget 3% of the step time)last 2.0 s, to step 5: {later['note']}whole run")
    assert third == (
        "recorded (budget 3% of the step time)"
        "last ~2 s, to step 2: per-layer statistics on 2 of 3 steps, all within the budget (measured: 1.0%)"
    )  # (the window's sentence only: not called the whole run's)
    assert hidden is True and errors == []
