"""cs.show's iframe in Debian's chromium: a page on a loopback origin (as Jupyter serves a notebook)
holding exactly the HTML a notebook shows for `run.show()` frames the live dashboard, which renders
its layer cards; a page on another origin cannot frame it, and the CLI's server cannot be framed.
Screenshot: /tmp/notebook-iframe.png."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convscope as cs
from convscope.config import ServeConfig
from convscope.notebook import NotebookDashboard
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CONVSCOPE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP notebook.example 127.0.0.1",  # a non-loopback name for the host page
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"chromium not found at {CHROMIUM}: run `make chromium` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class HostPages:
    """A plain HTTP server on 127.0.0.1 (a stand-in for Jupyter) serving one HTML page at /."""

    def __init__(self) -> None:
        self.body = b""
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(pages.body)))
                self.end_headers()
                self.wfile.write(pages.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, cell_html: str) -> None:
        self.body = (
            "<!doctype html><html><head><title>notebook</title></head><body style='margin:8px;font:14px sans-serif'>"
            f"<div class='output'>In [2]: run.show()</div>{cell_html}</body></html>"
        ).encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NotebookDashboard, HostPages, Path]]:
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1), relu1=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(6 * 16 * 16, 4),
    ))  # fmt: skip
    root = tmp_path_factory.mktemp("runs")
    run = cs.watch(model, root / "exp1", snapshot_every=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(4):
        x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=loss)
    dash = run.show(height=700)
    pages = HostPages()
    try:
        yield dash, pages, root
    finally:
        pages.close()
        dash.stop()
        run.close()


def _wait_status(page: Any, frame: Any, console: list[str], dash: NotebookDashboard) -> None:
    """Wait for the run's status in the framed page; on a timeout, fail with what the page showed
    (its status pill, its messages, its console) and what the API answers, to tell a slow machine
    from a refused call."""
    try:
        frame.locator("#status").filter(has_text=re.compile("running|trainer not responding")).wait_for(timeout=60_000)
    except Exception as exc:  # playwright's TimeoutError
        shown = {
            sel: frame.locator(sel).first.text_content(timeout=5_000) for sel in ("#status", "#messages")
        }  # fmt: skip
        inner = [f.url for f in page.frames if f != page.main_frame]
        raise AssertionError(f"no run status in the iframe: {shown}; frames {inner}; console {console[-10:]}; "
                             f"dashboard {dash!r}") from exc  # fmt: skip


def _page(browser: Any) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    return page, console


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_loopback_notebook_page_shows_the_live_dashboard(
    browser: Any, setting: tuple[NotebookDashboard, HostPages, Path], host: str
) -> None:
    dash, pages, _ = setting
    pages.serve(dash._repr_html_())
    page, console = _page(browser)
    page.goto(f"http://{host}:{pages.port}/")
    frame = page.frame_locator("iframe")
    # the API calls passed the cookie: the run's status arrived ("running"; once the fixture's
    # run has had no step for stale_after_s, as on a loaded machine, "trainer not responding")
    _wait_status(page, frame, console, dash)
    card = frame.locator("article.layer[data-layer=conv1]")
    card.scroll_into_view_if_needed(timeout=10_000)  # the page loads a card's pictures when it is in view
    card.locator("img.kind-a[src]").wait_for(state="visible", timeout=20_000)
    img = card.locator("img.kind-a")
    for _ in range(200):  # the PNG is rendered server-side on first request: wait for it to arrive
        if img.evaluate("i => i.complete && i.naturalWidth"):
            break
        page.wait_for_timeout(100)
    assert img.evaluate("i => i.naturalWidth") > 0
    inner = next(f for f in page.frames if f != page.main_frame)
    assert inner.url.startswith(f"http://{host}:{dash.port}/")  # the iframe follows the notebook's host
    assert "token=" not in inner.url  # the page dropped it from its address
    assert not [m for m in console if "frame-ancestors" in m or "X-Frame-Options" in m]
    if host == "localhost":
        frame.locator("header").first.scroll_into_view_if_needed()
        page.screenshot(path="/tmp/notebook-iframe.png", full_page=True)
    page.close()


def _refused(browser: Any, url: str) -> list[str]:
    page, console = _page(browser)
    page.goto(url)
    page.locator("iframe").wait_for()
    page.wait_for_timeout(1500)  # the frame's navigation is answered and refused
    inner = [f for f in page.frames if f != page.main_frame]
    assert inner and not inner[0].url.startswith("http")  # chromium's error page, not the dashboard
    assert page.frame_locator("iframe").locator("article.layer").count() == 0
    page.close()
    return console


def test_a_page_on_another_origin_cannot_frame_the_dashboard(
    browser: Any, setting: tuple[NotebookDashboard, HostPages, Path]
) -> None:
    dash, pages, _ = setting
    pages.serve(dash._repr_html_())
    console = _refused(browser, f"http://notebook.example:{pages.port}/")
    assert any(m.startswith(f"Framing 'http://localhost:{dash.port}/' violates") and "frame-ancestors 'self' http://localhost:*" in m for m in console), console


def test_the_cli_server_cannot_be_framed_even_by_loopback(
    browser: Any, setting: tuple[NotebookDashboard, HostPages, Path]
) -> None:
    _, pages, root = setting
    with DashboardServer(root, ServeConfig(port=0)) as cli:
        pages.serve(f'<iframe src="{cli.url}#run=exp1" width="100%" height="600"></iframe>')
        console = _refused(browser, f"http://localhost:{pages.port}/")
    assert any("violates the following Content Security Policy directive: \"frame-ancestors 'none'\"" in m for m in console), console
