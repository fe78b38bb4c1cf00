"""The layer card in Debian's chromium when the weights' side of the statistics came on fewer steps
than the maps' (a long step's budget: train/recorder_budget.py MAPS): the card shows the last step's
map numbers and the last ‖W‖, ‖dL/dW‖ and update ratio, with the step they are from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from server.fakerun import CONFIG, LAYERS, META

from convscope.config import ServeConfig
from convscope.runs import RunWriter
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

MAPS_ROW = {"z_min": -1.5, "z_max": 2.5, "a_min": 0.0, "a_max": 2.5, "dead_fraction": 0.25, "a_mean": 0.75,
            "grad_a_min": -0.125, "grad_a_max": 0.5, "grad_a_norm": 1.25}  # fmt: skip
WEIGHTS = {"weight_norm": 3.5, "grad_weight_norm": 0.0625, "update_ratio": 0.001953125}


def test_the_card_shows_the_last_weights_side_with_its_step(browser: Any, tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run", config=CONFIG, meta=META)
    w.log_json(0, "layers", LAYERS)
    for step in range(4):  # the weights' side on step 1 only (3: the maps' statistics alone)
        w.log_scalars(step, {"loss": 1.0 / (1 + step)})
        w.log_layer_stats(step, "conv1", {**MAPS_ROW, "a_mean": 0.75 + step, **(WEIGHTS if step == 1 else {})})
        w.commit(step)
    w.close(status="stopped")
    server = DashboardServer(tmp_path, ServeConfig(port=0, poll_s=0.2)).start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}#run=run")
        page.wait_for_function(f"document.querySelector('#run-select').value === {json.dumps('run')}")
        box = '[data-layer="conv1"] .stats'
        page.wait_for_function(f"(document.querySelector({json.dumps(box)}) || {{}}).textContent?.includes('at step 3')")
        text = page.text_content(box) or ""
        page.screenshot(path="/tmp/weights-side-card.png", full_page=False)
        page.close()
    finally:
        server.stop()
    assert "mean a 3.75" in text  # the last step's own maps' numbers
    assert "‖W‖ 3.5 (step 1)" in text and "‖dL/dW‖ 0.0625 (step 1)" in text
    assert "‖dL/da‖ 1.25 · update ratio ‖ΔW‖/‖W‖ 0.001953 (step 1)" in text  # (dL/da: step 3's own)
    assert errors == []
