"""The dashboard's charts over a run that restarted with other nets, in Debian's chromium.

A stopped run of 600 steps: fixture-net (conv1, fc) for steps 0-399, other-net (conv1, fc2)
from 400, fixture-net again from 420, other-net again from 440 (answered `model` controls, as
the built-in trainer acknowledges them: at the new net's first step).

  - by default the four charts show the net now training: x from 440 to 599 on all four, the
    health charts' series are this net's layers, no point before 440 is drawn;
  - ticked "whole run", x is 0-599 on all four and every series holds the points of one net
    only (a line never joins two nets); the health series name their net;
  - restart labels stay inside the plot beside their line and never overlap (the newest keeps
    its whole text); hovering a line says it whole;
  - the history (/scalars, /stats) is asked for before any picture.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
from server.fakerun import CONFIG, LAYERS, META, sample_images

from convscope.config import ServeConfig
from convscope.runs import RunReader, RunWriter
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

OTHER_LAYERS = [{**LAYERS[0], "name": "conv1"}, {**LAYERS[1], "name": "fc2"}]
NETS = [(0, "fixture-net", LAYERS), (400, "other-net", OTHER_LAYERS), (420, "fixture-net", LAYERS),
        (440, "other-net", OTHER_LAYERS)]  # fmt: skip
LAST = 599


def net_at(step: int) -> tuple[int, str, list[dict[str, Any]]]:
    return [n for n in NETS if n[0] <= step][-1]


def write_run(path: Path) -> None:
    w = RunWriter(path, config={**CONFIG, "model": "zoo:fixture-net"}, meta=META)
    w.log_snapshot(0, "_test", "input", sample_images())
    for step in range(LAST + 1):
        start, name, layers = net_at(step)
        if step == start:
            w.log_json(step, "layers", layers)
            if step > 0:
                with RunReader(path) as r:
                    ident = r.send_control("model", f"zoo:{name}")
                (ctrl,) = w.poll_controls()
                assert ctrl.id == ident
                w.ack_control(ident, step, result={"ok": True, "model": f"zoo:{name}"})
                w.set_meta("model", f"zoo:{name}")
        loss = 2.0 if name == "other-net" else 0.5
        w.log_scalars(step, {"loss": loss, "wd_loss": 0.0625, "train_acc": 0.25 if name == "other-net" else 0.75,
                             "examples": 4.0 * (step + 1), "examples_per_s": 400.0, **CONFIG})  # fmt: skip
        if step % 10 == 5:
            w.log_scalars(step, {"val_acc": 0.5})
        for layer in layers:
            w.log_layer_stats(step, layer["name"], {"update_ratio": 1e-3, "dead_fraction": 0.25})
        if step % 50 == 0 or step == start:
            w.log_snapshot(step, "conv1", "a", torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(step)))
        w.commit(step)
    w.close(status="stopped")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    root = tmp_path_factory.mktemp("runs")
    write_run(root / "restarted")
    s = DashboardServer(root, ServeConfig(port=0, poll_s=0.2)).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser: Any, server: DashboardServer) -> Iterator[Any]:
    p = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    errors: list[str] = []
    requests: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("request", lambda r: requests.append(r.url))
    p.requests = requests  # type: ignore[attr-defined]
    p.goto(f"{server.url}#run=restarted")
    p.wait_for_function("document.querySelectorAll('.uplot').length === 4")
    p.wait_for_function("(document.querySelector('#chart-loss').dataset.markLabels || '').includes('other-net')")
    yield p
    p.close()
    assert errors == []


def chart(page: Any, name: str) -> dict[str, Any]:
    """What chart `name` draws: x range, series labels, data, the labels of its marks, plot width."""
    got: dict[str, Any] = page.evaluate(
        """(name) => { const e = document.querySelector(`#chart-${name}`); const c = e.chart;
        return { xrange: JSON.parse(e.dataset.xrange), series: JSON.parse(e.dataset.series),
                 data: c.data, labels: JSON.parse(e.dataset.markLabels || '[]'),
                 width: c.plot.bbox.width / (window.devicePixelRatio || 1) }; }""",
        name,
    )
    return got


def nets_of(data: list[list[float | None]]) -> list[set[int]]:
    """For each series: the nets (their first steps) its drawn points belong to."""
    xs = data[0]
    return [{net_at(int(x))[0] for x, y in zip(xs, ys, strict=True) if y is not None} for ys in data[1:]]


def test_charts_show_the_net_now_training_by_default(page: Any) -> None:
    page.wait_for_function("JSON.parse(document.querySelector('#chart-dead').dataset.xrange || 'null')?.[1] === 599")
    for name in ("loss", "acc", "ratio", "dead"):
        c = chart(page, name)
        assert c["xrange"] == [440, LAST], name
        assert min(c["data"][0]) == 440, name
    assert chart(page, "ratio")["series"] == ["conv1", "fc2", "1e-3 (healthy)"]
    assert chart(page, "dead")["series"] == ["conv1", "fc2"]
    assert chart(page, "loss")["series"] == ["loss L", "loss L, smoothed", "weight-decay loss (right axis)"]
    assert {v for v in chart(page, "loss")["data"][1] if v is not None} == {2.0}  # other-net's loss only
    assert " ".join(page.inner_text("#training .chart-span").split()) == (
        "whole run (4 nets) — charts show the net now training, other-net, from its first step 440"
    )
    # the newest restart marks the left edge, its label inside the plot right of the line
    (label,) = [lb for lb in chart(page, "ratio")["labels"] if lb["text"] is not None]
    assert label["step"] == 440 and label["text"] == "restart: other-net"
    assert label["line"] == pytest.approx(0, abs=1) and label["x0"] == pytest.approx(label["line"] + 3)


def test_whole_run_never_joins_two_nets(page: Any) -> None:
    page.locator("#health .chart-span input").check()
    page.wait_for_function("JSON.parse(document.querySelector('#chart-loss').dataset.xrange || 'null')?.[0] === 0")
    page.wait_for_function("document.querySelector('#chart-loss').chart.data[0].length >= 600")
    for name in ("loss", "acc", "ratio", "dead"):
        c = chart(page, name)
        assert c["xrange"] == [0, LAST], name
        nets = nets_of(c["data"])
        if name == "ratio":
            assert c["series"][-1] == "1e-3 (healthy)" and nets.pop() == {0, 440}  # a guide from 0 to 599, not a net's
        assert all(len(n) == 1 for n in nets if n), (name, nets)
    assert chart(page, "dead")["series"] == [
        "conv1 (net 1: fixture-net)", "fc (net 1: fixture-net)", "conv1 (net 2: other-net)", "fc2 (net 2: other-net)",
        "conv1 (net 3: fixture-net)", "fc (net 3: fixture-net)", "conv1 (net 4: other-net)", "fc2 (net 4: other-net)",
    ]  # fmt: skip
    assert [n for n in nets_of(chart(page, "dead")["data"])] == [{0}, {0}, {400}, {400}, {420}, {420}, {440}, {440}]
    assert page.is_checked("#training .chart-span input")  # one switch for the four charts


def test_restart_labels_inside_beside_their_line_never_overlapping(page: Any) -> None:
    page.locator("#training .chart-span input").check()
    page.wait_for_function("JSON.parse(document.querySelector('#chart-acc').dataset.xrange || 'null')?.[0] === 0")
    for name in ("loss", "acc", "ratio", "dead"):
        c = chart(page, name)
        labels = c["labels"]
        assert [lb["step"] for lb in labels] == [400, 420, 440], name
        drawn = sorted((lb for lb in labels if lb["text"] is not None), key=lambda lb: lb["x0"])
        assert drawn and drawn[-1]["step"] == 440 and drawn[-1]["text"] == "restart: other-net", name
        for lb in drawn:
            assert lb["x0"] >= 0 and lb["x1"] <= c["width"] + 0.01, (name, lb)
            beside = lb["x0"] == pytest.approx(lb["line"] + 3) or lb["x1"] == pytest.approx(lb["line"] - 3)
            assert beside, (name, lb)
            assert lb["text"] in ("restart: other-net", "other-net", "restart: fixture-net", "fixture-net")
        for a, b in pairwise(drawn):
            assert a["x1"] < b["x0"], (name, a, b)
    # hovering a restart line says it whole
    c = chart(page, "loss")
    line = next(lb["line"] for lb in c["labels"] if lb["step"] == 420)
    box = page.locator("#chart-loss .u-over").bounding_box()
    page.mouse.move(box["x"] + line, box["y"] + box["height"] / 2)
    page.wait_for_function("document.querySelector('#chart-loss .u-over').title.includes('fixture-net')")
    assert page.get_attribute("#chart-loss .u-over", "title") == "restart: fixture-net (step 420)"


def test_history_is_asked_for_before_any_picture(page: Any) -> None:
    for _ in range(300):  # the pictures come after the charts: on a busy machine, seconds later
        if any(".png" in u for u in page.requests):
            break
        page.wait_for_timeout(100)
    urls = [u.split("/api/runs/restarted", 1)[-1] for u in page.requests if "/api/" in u]
    first_png = next(i for i, u in enumerate(urls) if ".png" in u)
    asked = {u.split("?")[0]: i for i, u in reversed(list(enumerate(urls)))}
    assert asked["/scalars"] < first_png and asked["/stats"] < first_png, urls[: first_png + 1]
    assert urls[asked["/scalars"]].split("?")[1] == "max_points=3000&since=439"  # this net's points, whole
