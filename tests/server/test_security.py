"""The server's guard (convscope/server/security.py), issue 7 cases 2-4 and the token in URLs:
Host check (DNS rebinding), Origin check on state-changing requests, security headers on every
response, the ?token= -> cookie exchange; and the CSP <meta> of the static reports.

In process with TestClient (explicit base_url and headers on every client), plus one real
uvicorn server on a free 127.0.0.1 port for the raw-socket Host check.
"""

from __future__ import annotations

import http.client
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from PIL import Image
from server.fakerun import fixture_writer, write_fixture_run

from convscope.config import ServeConfig
from convscope.runs import RunWriter
from convscope.server import DashboardServer, create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BASE = "http://127.0.0.1:8000"
TOKEN = "s3cret-token-for-tests"
HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}


def host_line(host: str, name: str) -> str:
    return (
        f"Host {host!r} is not allowed (DNS-rebinding guard): this server answers to "
        f"127.0.0.1, [::1], localhost; to allow this name, start convscope with --allow-host {name}"
    )


FOREIGN_ORIGIN = (
    "cross-origin request refused: Origin {!r} is not this dashboard's own; "
    "controls and uploads are taken only from the dashboard page itself"
)
NO_ORIGIN = (
    "request refused: a form, upload or non-JSON request without an Origin header; "
    "send it from the dashboard page (or send JSON with Content-Type: application/json)"
)


def refused(res: Any, status: int) -> str:
    """The one-line error of a refused request, after checking status, type and headers."""
    assert res.status_code == status, res.text
    assert res.headers["content-type"] == "application/json"
    for k, v in HEADERS.items():
        assert res.headers[k] == v, k
    body = res.json()
    assert list(body) == ["error"] and "\n" not in body["error"]
    return str(body["error"])


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Any, RunWriter]]:
    """An app over a live run (its writer open, so controls would be accepted)."""
    w = fixture_writer(tmp_path, "live")
    yield create_app(tmp_path, ServeConfig()), w
    w.close()


# ---- case 2: Host check (DNS rebinding) -----------------------------------------------------


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("evil.example", "evil.example"),
        ("evil.example:8000", "evil.example"),
        ("127.0.0.1.nip.io:8000", "127.0.0.1.nip.io"),
        ("localhost.evil.example", "localhost.evil.example"),
        ("testserver", "testserver"),
        ("192.168.1.5:8000", "192.168.1.5"),
    ],
)
def test_foreign_host_is_refused(tmp_path: Path, host: str, name: str) -> None:
    write_fixture_run(tmp_path)
    with TestClient(create_app(tmp_path, ServeConfig()), base_url=BASE) as c:
        for path in ("/", "/api/runs", "/api/runs/fix/image.png?layer=conv1&kind=a",
                     "/static/js/main.js", "/api/runs/fix/events"):  # fmt: skip
            assert refused(c.get(path, headers={"host": host}), 403) == host_line(host, name)


def test_bad_or_missing_host_is_refused(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path, ServeConfig()), base_url=BASE) as c:
        for host in ("localhost:80:80", "::1", "[::1", "localhost:http", "a/b"):
            assert refused(c.get("/api/runs", headers={"host": host}), 403) == host_line(
                host, "NAME"
            )


def test_loopback_names_with_any_port_are_accepted(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path, ServeConfig()), base_url=BASE) as c:
        for host in ("127.0.0.1:8000", "127.0.0.1", "localhost:8000", "LocalHost", "localhost.",
                     "[::1]:8000", "[::1]", "localhost:1"):  # fmt: skip
            res = c.get("/api/runs", headers={"host": host})
            assert (res.status_code, res.json()) == (200, {"runs": []}), host


def test_allow_host_and_the_bound_address(tmp_path: Path) -> None:
    cfg = ServeConfig(host="0.0.0.0", token=TOKEN, allow_hosts=("mybox.lan", "[fe80::1]"))
    auth = {"authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(tmp_path, cfg), base_url=BASE) as c:
        for host in ("mybox.lan:8000", "MYBOX.LAN", "[fe80::1]:8000", "0.0.0.0:8000", "localhost"):
            assert c.get("/api/runs", headers={**auth, "host": host}).status_code == 200, host
        line = refused(c.get("/api/runs", headers={**auth, "host": "other.lan"}), 403)
        assert line == (
            "Host 'other.lan' is not allowed (DNS-rebinding guard): this server answers to "
            "0.0.0.0, 127.0.0.1, [::1], [fe80::1], localhost, mybox.lan; to allow this name, "
            "start convscope with --allow-host other.lan"
        )


def test_allow_hosts_fails_fast() -> None:
    for bad in ("", "http://mybox", "mybox:8000", "my box", "*", "fe80::1"):
        with pytest.raises(ValueError, match="is not a host name"):
            ServeConfig(allow_hosts=(bad,))
    with pytest.raises(TypeError, match="tuple of names"):
        ServeConfig(allow_hosts="mybox")  # type: ignore[arg-type]


def test_host_name_parsing() -> None:
    from convscope.server.security import host_name

    assert host_name("LocalHost:8000") == ("localhost", 8000)
    assert host_name("[::1]:80") == ("::1", 80)
    assert host_name("example.org.") == ("example.org", None)
    for bad in ("", ":80", "[::1]x", "a:b:c", "host:99999999", "user@host"):
        assert host_name(bad) is None, bad


def test_real_server_refuses_a_foreign_host(tmp_path: Path) -> None:
    """The issue's own check: `curl -H 'Host: evil.example' 127.0.0.1:PORT/api/runs`."""
    with DashboardServer(tmp_path, ServeConfig(port=0)) as srv:
        assert srv.port is not None
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/api/runs", headers={"Host": "evil.example"})
        res = conn.getresponse()
        assert res.status == 403
        assert res.read() == (
            b'{"error": "' + host_line("evil.example", "evil.example").encode() + b'"}'
        )
        conn.request("GET", "/api/runs", headers={"Host": f"localhost:{srv.port}"})
        res = conn.getresponse()
        assert (res.status, res.read()) == (200, b'{"runs":[]}')
        conn.close()


# ---- case 3: Origin check on state-changing requests ----------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://127.0.0.1:9999", "http://localhost:8000",
     "https://127.0.0.1:8000", "http://127.0.0.1:8000.evil.example", "file://"],
)  # fmt: skip
def test_foreign_origin_cannot_send_controls_or_uploads(
    live: tuple[Any, RunWriter], origin: str
) -> None:
    app, w = live
    with TestClient(app, base_url=BASE) as c:
        sent = [
            c.post("/api/runs/live/controls", json={"key": "pause", "value": True},
                   headers={"origin": origin}),
            c.post("/api/runs/live/uploads", files={"image": ("x.png", png_bytes(), "image/png")},
                   headers={"origin": origin}),
            c.put("/api/runs/live/controls", content=b"{}", headers={"origin": origin}),
            c.delete("/api/runs/live", headers={"origin": origin}),
        ]  # fmt: skip
        for res in sent:
            assert refused(res, 403) == FOREIGN_ORIGIN.format(origin)
    assert w.poll_controls() == []  # nothing reached the trainer


def test_form_upload_or_text_without_origin_is_refused(live: tuple[Any, RunWriter]) -> None:
    app, w = live
    with TestClient(app, base_url=BASE) as c:
        up = c.post("/api/runs/live/uploads", files={"image": ("x.png", png_bytes(), "image/png")})
        form = c.post("/api/runs/live/controls", data={"key": "pause", "value": "true"})
        text = c.post(
            "/api/runs/live/controls",
            content=b'{"key": "pause", "value": true}',
            headers={"content-type": "text/plain"},
        )
        bare = c.post("/api/runs/live/controls")
        for res in (up, form, text, bare):
            assert refused(res, 403) == NO_ORIGIN
        cross = c.post(
            "/api/runs/live/controls",
            json={"key": "pause", "value": True},
            headers={"sec-fetch-site": "cross-site"},
        )
        assert refused(cross, 403) == "cross-site request refused (Sec-Fetch-Site: cross-site)"
    assert w.poll_controls() == []


def test_own_origin_json_and_same_origin_fetch_are_accepted(live: tuple[Any, RunWriter]) -> None:
    app, w = live
    with TestClient(app, base_url=BASE) as c:
        own = c.post(
            "/api/runs/live/uploads",
            files={"image": ("x.png", png_bytes(), "image/png")},
            headers={"origin": "http://127.0.0.1:8000"},
        )
        assert (own.status_code, own.json()) == (200, {"id": 1})
        fetched = c.post(
            "/api/runs/live/uploads",
            files={"image": ("x.png", png_bytes(), "image/png")},
            headers={"sec-fetch-site": "same-origin"},
        )
        assert (fetched.status_code, fetched.json()) == (200, {"id": 2})
        script = c.post(
            "/api/runs/live/controls",
            json={"key": "pause", "value": True},
            headers={"content-type": "application/json; charset=utf-8"},
        )  # curl or a script: JSON without Origin
        assert (script.status_code, script.json()) == (200, {"id": 3})
        other_host = c.post(
            "/api/runs/live/controls",
            json={"key": "pause", "value": False},
            headers={"host": "localhost:8000", "origin": "http://localhost:8000"},
        )
        assert (other_host.status_code, other_host.json()) == (200, {"id": 4})
    assert [c.key for c in w.poll_controls()] == ["predict", "predict", "pause", "pause"]


def test_preflight_is_not_granted(live: tuple[Any, RunWriter]) -> None:
    app, _ = live
    with TestClient(app, base_url=BASE) as c:
        res = c.options(
            "/api/runs/live/controls",
            headers={"origin": "http://evil.example", "access-control-request-method": "POST",
                     "access-control-request-headers": "content-type"},
        )  # fmt: skip
        assert res.status_code == 405
        assert not any(k.startswith("access-control-") for k in res.headers)


# ---- case 4: security headers on every response ---------------------------------------------


def test_every_response_has_the_security_headers(tmp_path: Path) -> None:
    write_fixture_run(tmp_path)
    app = create_app(tmp_path, ServeConfig())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        responses = {
            "page": c.get("/"),
            "script": c.get("/static/js/main.js"),
            "style": c.get("/static/style.css"),
            "json": c.get("/api/runs"),
            "png": c.get("/api/runs/fix/image.png", params={"layer": "conv1", "kind": "a"}),
            "400": c.get("/api/runs/fix/scalars", params={"since": -5}),
            "404": c.get("/api/nothing"),
            "500": c.get("/boom"),
        }
        with c.stream("GET", "/api/runs/fix/events") as sse:
            responses["sse"] = sse
    statuses = {k: r.status_code for k, r in responses.items()}
    assert statuses == {"page": 200, "script": 200, "style": 200, "json": 200, "png": 200,
                        "400": 400, "404": 404, "500": 500, "sse": 200}  # fmt: skip
    for what, res in responses.items():
        got = {k: res.headers.get(k) for k in HEADERS}
        assert got == HEADERS, what
    assert responses["page"].headers["content-type"] == "text/html; charset=utf-8"
    from convscope.server.security import CSP

    assert HEADERS["content-security-policy"] == CSP


def test_the_page_has_no_inline_script_or_style() -> None:
    """The CSP allows no inline script or style: the page must not need any."""
    import re

    page = (Path(create_app.__code__.co_filename).parent / "static" / "index.html").read_text()
    assert "<style" not in page and not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page)  # no onclick=... handlers
    assert not re.search(r"href=[\"']?javascript:", page, flags=re.I)
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and all(" src=" in s for s in scripts), scripts


# ---- the token travels in URLs: exchanged once for a cookie ---------------------------------


def token_client(tmp_path: Path) -> TestClient:
    write_fixture_run(tmp_path)
    return TestClient(create_app(tmp_path, ServeConfig(token=TOKEN)), base_url=BASE)


def test_token_in_url_is_exchanged_for_a_strict_httponly_cookie(tmp_path: Path) -> None:
    with token_client(tmp_path) as c:
        page = c.get("/", params={"token": TOKEN})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        [set_cookie] = page.headers.get_list("set-cookie")
        name, _, rest = set_cookie.partition("=")
        value, _, attrs = rest.partition("; ")
        assert name == "convscope-token-8000"  # cookies are per host, not port: it names the port
        assert attrs == "HttpOnly; Path=/; SameSite=Strict"
        assert len(value) == 64 and TOKEN not in value  # derived from the token, not the token
        # later requests carry the cookie only, and set no new one
        for path in (
            "/static/js/main.js",
            "/api/runs",
            "/api/runs/fix/image.png?layer=conv1&kind=a",
        ):
            res = c.get(path)
            assert res.status_code == 200, path
            assert "set-cookie" not in res.headers
        # the cookie is bound to the token: a forged or another server's cookie is refused
        c.cookies.clear()
        c.cookies.set(name, "0" * 64)
        assert "wrong token" in refused(c.get("/api/runs"), 401)
        c.cookies.clear()
        c.cookies.set("convscope-token-8001", value)
        assert "needs a token" in refused(c.get("/api/runs"), 401)


def test_header_token_sets_no_cookie_and_wrong_tokens_are_refused(tmp_path: Path) -> None:
    with token_client(tmp_path) as c:
        res = c.get("/api/runs", headers={"authorization": f"Bearer {TOKEN}"})
        assert res.status_code == 200 and "set-cookie" not in res.headers
        line = refused(c.get("/api/runs", params={"token": "nope-nope"}), 401)
        assert line == "wrong token: open the URL with ?token=... as printed by convscope serve"
        assert refused(c.get("/api/runs"), 401) == (
            "this server needs a token: open the URL with ?token=... as printed by convscope serve"
        )
        # the Host check comes first: a right token from a foreign Host is still refused
        res = c.get("/api/runs", params={"token": TOKEN}, headers={"host": "evil.example"})
        assert refused(res, 403) == host_line("evil.example", "evil.example")


def test_the_app_never_sees_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The guard takes ?token= out of the query before any route, error message or log line."""
    write_fixture_run(tmp_path)
    app = create_app(tmp_path, ServeConfig(token=TOKEN))

    @app.get("/echo")
    def echo(request: Request) -> dict[str, str]:
        return {"url": str(request.url)}

    @app.get("/boom")
    def boom(request: Request) -> None:
        raise RuntimeError(f"failed on {request.url}")

    caplog.set_level(logging.DEBUG)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        echoed = c.get("/echo", params={"a": "1", "token": TOKEN})
        assert echoed.json() == {"url": "http://127.0.0.1:8000/echo?a=1"}
        assert c.get("/boom", params={"token": TOKEN}).status_code == 500
        assert (
            c.get("/api/runs/fix/scalars", params={"since": "x", "token": TOKEN}).status_code == 400
        )
        assert c.get("/api/nothing", params={"token": TOKEN}).status_code == 404
    server_side = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))  # the test's own client logs its URLs
    )
    assert "failed on http://127.0.0.1:8000/boom" in server_side  # the log line is there...
    assert TOKEN not in server_side  # ...without the token


# ---- case 4, reports: the static HTML carries the CSP in a <meta> tag ------------------------


def test_static_reports_carry_the_csp_meta(tmp_path: Path) -> None:
    import base64
    import hashlib
    import re

    import torch

    import convscope as cs
    from convscope.inspect import inspect
    from convscope.models import load_model
    from convscope.render.diagnose_report import write_diagnosis_report

    model, _, _ = load_model("zoo:convnetjs-cifar")
    diag = cs.diagnose(model, torch.zeros(4, 3, 32, 32), batch_size=4)
    pages = [inspect(out=tmp_path / "rep"), write_diagnosis_report(diag, tmp_path / "diag")]
    for path in pages:
        doc = Path(path).read_text()
        [style] = re.findall(r"<style>(.*?)</style>", doc, flags=re.S)
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        meta = (
            '<meta http-equiv="Content-Security-Policy" content="default-src \'self\'; '
            f"img-src 'self' data:; style-src 'sha256-{digest}'; object-src 'none'; "
            "base-uri 'none'; form-action 'self'\">"
        )
        head = doc.split("</head>")[0]
        assert meta in head, path
        assert head.index(meta) < head.index("<style>")  # before what it governs
        assert "<script" not in doc and " style=" not in doc and "style='" not in doc
