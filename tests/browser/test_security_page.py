"""The server's guard in Debian's chromium (issue 7): the ?token= in the address bar is exchanged
for an HttpOnly SameSite=Strict cookie and leaves the URL; the page runs under its CSP with no
violation; a DNS-rebound name and a cross-site page (evil.example mapped to 127.0.0.1 by
chromium's host resolver) get nothing through; the static reports open offline under their CSP.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from server.fakerun import fixture_writer, write_fixture_run

from convscope.config import ServeConfig
from convscope.server import DashboardServer

pytestmark = pytest.mark.browser

TOKEN = "t0ken-in-the-url"
# collects every CSP violation the page reports (an init script runs outside the page's CSP)
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


def wait_js(page: Any, expression: str, timeout_s: float = 15.0) -> None:
    """Poll `expression` with page.evaluate until it is truthy. (Playwright's wait_for_function
    evals its predicate inside the page, which the dashboard's CSP rightly forbids.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def test_token_is_exchanged_for_a_cookie_and_leaves_the_url(browser: Any, tmp_path: Path) -> None:
    write_fixture_run(tmp_path, "fix")  # finished: pictures, predictions (bars), findings
    with DashboardServer(tmp_path, ServeConfig(port=0, token=TOKEN)) as server:
        base = f"http://127.0.0.1:{server.port}/"
        assert server.url == f"{base}?token={TOKEN}"
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        page.add_init_script(WATCH_CSP)
        errors: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        try:
            page.goto(server.url + "#run=fix")
            wait_js(page, "document.querySelector('#status').textContent === 'finished'")
            wait_js(
                page,
                "[...document.querySelectorAll('article.layer img')].length >= 9 && [...document"
                ".querySelectorAll('article.layer img')].every(i => i.complete && i.naturalWidth > 0)",
            )
            page.wait_for_selector("#predictions .bar .fill")  # a bar sized by CSSOM, not style=
            assert page.url == f"{base}#run=fix"  # the token left the address bar
            assert page.evaluate("location.search") == ""
            [cookie] = ctx.cookies()
            assert cookie["name"] == f"convscope-token-{server.port}"
            assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
            assert TOKEN not in cookie["value"]
            assert page.evaluate("document.cookie") == ""  # scripts cannot read it
            assert requests[0] == server.url  # the one request with the token
            assert [u for u in requests[1:] if TOKEN in u] == []  # never in a URL again
            assert len(requests) > 15
            # the cookie alone opens the page again, and every picture
            page.goto(base + "#run=fix")
            wait_js(page, "document.querySelector('#status').textContent === 'finished'")
            wait_js(
                page,
                "[...document.querySelectorAll('article.layer img')].length >= 9 && [...document"
                ".querySelectorAll('article.layer img')].every(i => i.complete && i.naturalWidth > 0)",
            )
            assert page.evaluate("window.__csp") == []
            # another browser profile without the cookie gets nothing
            other = browser.new_context()
            res = other.request.get(base + "api/runs")
            assert res.status == 401 and "needs a token" in res.json()["error"]
            other.close()
        finally:
            ctx.close()
    assert errors == []


def test_dashboard_runs_under_its_csp(browser: Any, tmp_path: Path) -> None:
    """No violation on the whole page: charts (uPlot), pictures, prediction bars, controls."""
    w = fixture_writer(tmp_path, "live")
    with DashboardServer(tmp_path, ServeConfig(port=0)) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.add_init_script(WATCH_CSP)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            res = page.goto(server.url + "#run=live")
            assert res is not None
            assert res.headers["content-security-policy"] == (
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                "form-action 'self'; frame-ancestors 'none'"
            )
            wait_js(page, "document.querySelectorAll('.uplot').length === 4")
            page.wait_for_selector("#predictions .bar .fill")
            page.fill("#ctl-lr", "0.5")
            page.click("#apply-lr")  # a same-origin POST from the page is accepted
            wait_js(page, "document.querySelector('#ctl-log').textContent.includes('0.5')")
            assert page.evaluate("window.__csp") == []
        finally:
            page.close()
    assert [c.key for c in w.poll_controls()] == ["lr"]
    w.close()
    assert errors == []


@pytest.fixture
def evil_browser(browser: Any) -> Iterator[Any]:
    """A second chromium in which evil.example resolves to 127.0.0.1 (a DNS-rebinding attacker's
    name, and a cross-site page that can reach the dashboard)."""
    b = browser.browser_type.launch(
        executable_path=os.environ.get("CONVSCOPE_CHROMIUM", "/usr/bin/chromium"),
        args=["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--host-resolver-rules=MAP evil.example 127.0.0.1"],
        headless=True,
    )  # fmt: skip
    try:
        yield b
    finally:
        b.close()


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


EVIL_PAGE = """<!doctype html><title>evil</title><form id=f method=post enctype=text/plain
 action="{dash}api/runs/live/controls"><input name='{{"key":"pause","value":true,"x":"' value='"}}'></form>
<script>
(async () => {{
  const dash = "{dash}";
  const png = await (await fetch("/cat.png")).blob();
  const form = new FormData(); form.append("image", png, "cat.png");
  const results = [];
  for (const [path, init] of [
    ["api/runs/live/uploads", {{method: "POST", mode: "no-cors", body: form}}],
    ["api/runs/live/controls", {{method: "POST", mode: "no-cors",
       headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{key: "pause", value: true}})}}],
    ["api/runs/live/controls", {{method: "POST", mode: "cors",
       headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{key: "lr", value: 9}})}}],
  ]) {{
    try {{ await fetch(dash + path, init); results.push("sent"); }} catch (e) {{ results.push("failed"); }}
  }}
  document.title = "done " + results.join(",");
}})();
</script>"""


def test_rebound_name_and_cross_site_page_get_nothing_through(
    evil_browser: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="convscope.server")
    w = fixture_writer(tmp_path, "live")  # a live run: controls and uploads would be taken
    with DashboardServer(tmp_path, ServeConfig(port=0)) as server:
        dash = f"http://127.0.0.1:{server.port}/"

        class Evil(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, kind = (
                    (png_bytes(), "image/png")
                    if self.path == "/cat.png"
                    else (EVIL_PAGE.format(dash=dash).encode(), "text/html")
                )
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
        thread = threading.Thread(target=evil.serve_forever, daemon=True)
        thread.start()
        page = evil_browser.new_page()
        try:
            # DNS rebinding: the attacker's name now points at 127.0.0.1
            res = page.goto(f"http://evil.example:{server.port}/api/runs")
            assert res is not None and res.status == 403
            assert res.json() == {
                "error": f"Host 'evil.example:{server.port}' is not allowed (DNS-rebinding guard): "
                "this server answers to 127.0.0.1, [::1], localhost; to allow this name, start "
                "convscope with --allow-host evil.example"
            }
            # a cross-site page posts an upload, a text/plain control and a JSON control
            page.goto(f"http://evil.example:{evil.server_address[1]}/")
            wait_js(page, "document.title.startsWith('done')")
            # the browser sent the two no-cors POSTs; their 403 answers are opaque to the page
            # (and Cross-Origin-Resource-Policy makes fetch fail); the JSON one needs a CORS
            # preflight, which gets no Access-Control-Allow-Origin, so it is never sent
            assert page.title() == "done failed,failed,failed"
            # and an old-style cross-site form post (text/plain body shaped like JSON)
            with page.expect_navigation():
                page.evaluate("document.getElementById('f').submit()")
            assert "cross-origin request refused" in page.inner_text("body")
        finally:
            page.close()
            evil.shutdown()
            evil.server_close()
    assert w.poll_controls() == []  # nothing reached the trainer
    w.close()
    origin = f"'http://evil.example:{evil.server_address[1]}'"
    refusals = [
        r.getMessage()
        for r in caplog.records
        if r.name == "convscope.server" and "/favicon.ico" not in r.getMessage()  # chromium's own
    ]
    assert [m.split(":")[0] for m in refusals] == [
        "refused GET /api/runs (403)",
        "refused POST /api/runs/live/uploads (403)",
        "refused POST /api/runs/live/controls (403)",
        "refused POST /api/runs/live/controls (403)",
    ]
    assert all(f"Origin {origin} is not this dashboard's own" in m for m in refusals[1:])


def test_reports_open_offline_under_their_csp(browser: Any, tmp_path: Path) -> None:
    """inspect and diagnose reports: the CSP <meta> is in force (a script is refused), their own
    hashed <style> applies, every picture decodes, no violation, nothing leaves the file."""
    import torch

    import convscope as cs
    from convscope.inspect import inspect
    from convscope.models import load_model
    from convscope.render.diagnose_report import write_diagnosis_report

    model, _, _ = load_model("zoo:convnetjs-cifar")
    diag = cs.diagnose(model, torch.zeros(8, 3, 32, 32), batch_size=8)
    check_report(browser, Path(inspect(out=tmp_path / "rep")))
    check_report(browser, Path(write_diagnosis_report(diag, tmp_path / "diag")))


def check_report(browser: Any, html: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.add_init_script(WATCH_CSP)
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        policy = page.evaluate(
            "document.querySelector('meta[http-equiv=Content-Security-Policy]')?.content ?? null"
        )
        assert policy is not None and policy.startswith("default-src 'self'; img-src 'self' data:")
        header = page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor")
        assert header == "rgb(31, 41, 55)"  # the hashed <style> is applied
        sizes = page.eval_on_selector_all(
            "img", "es => es.map(e => e.complete && e.naturalWidth > 0)"
        )
        assert sizes and all(sizes)
        assert page.evaluate("window.__csp") == []
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        # the policy is in force: an injected inline script is refused
        page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
            " document.body.append(s); }"
        )
        assert page.evaluate("window.__ran === undefined")
        assert [v.split(" ")[0] for v in page.evaluate("window.__csp")] == ["script-src-elem"]
    finally:
        page.close()
    assert [e for e in errors if "Content Security Policy" not in e] == []
