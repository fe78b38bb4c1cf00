"""cs.show / run.show: the dashboard server a notebook frames (convscope/notebook.py, ServeConfig.embed).

Headers of both modes in-process; then a real server thread started by show(): it listens on
127.0.0.1 only, needs its token, refuses a foreign Host and a foreign Origin, and follows a
watch() loop stepping in the same process.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from torch import nn

import convscope as cs
from convscope.config import ServeConfig
from convscope.notebook import NotebookDashboard
from convscope.server import create_app
from convscope.server.security import CSP

EMBED_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self' http://localhost:* http://127.0.0.1:*"
)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def test_cli_server_forbids_framing_and_embed_server_allows_loopback_pages_only(tmp_path: Path) -> None:
    cli = TestClient(create_app(tmp_path, ServeConfig()), base_url="http://127.0.0.1:8000")
    embed = TestClient(create_app(tmp_path, ServeConfig(embed=True)), base_url="http://127.0.0.1:8000")
    for path in ("/", "/api/runs", "/api/runs/nope"):  # a page, an answer, an error
        r = cli.get(path)
        assert r.headers["content-security-policy"] == CSP
        assert CSP.endswith("frame-ancestors 'none'")
        assert r.headers["x-frame-options"] == "DENY"
        e = embed.get(path)
        assert e.status_code == r.status_code
        assert e.headers["content-security-policy"] == EMBED_CSP
        assert "x-frame-options" not in e.headers
        for h in ("x-content-type-options", "referrer-policy", "cross-origin-resource-policy"):
            assert e.headers[h] == r.headers[h]
    # refusals carry the mode's headers too, and the Host and Origin checks hold in both modes
    for client, csp in ((cli, CSP), (embed, EMBED_CSP)):
        r = client.get("/api/runs", headers={"host": "evil.example"})
        assert r.status_code == 403 and "DNS-rebinding" in r.json()["error"]
        assert r.headers["content-security-policy"] == csp
        r = client.post("/api/runs/x/controls", json={"key": "pause", "value": True}, headers={"origin": "http://localhost:8888"})
        assert r.status_code == 403 and "cross-origin request refused" in r.json()["error"]


@pytest.fixture
def shown(tmp_path: Path) -> Iterator[tuple[NotebookDashboard, nn.Module, object]]:
    model = small_net()
    run = cs.watch(model, tmp_path / "exp1", snapshot_every=0)
    dash = run.show()
    try:
        yield dash, model, run
    finally:
        dash.stop()
        run.close()


def test_show_serves_the_run_on_loopback_with_a_token(shown: tuple[NotebookDashboard, nn.Module, object]) -> None:
    dash, _, run = shown
    assert isinstance(dash, NotebookDashboard) and dash.running
    assert dash.config.host == "127.0.0.1" and dash.config.embed and dash.config.token
    sockets = [s for srv in dash._server._server.servers for s in (srv.sockets or ())]
    assert {s.getsockname()[0] for s in sockets} == {"127.0.0.1"}
    assert dash.url == f"http://localhost:{dash.port}/?token={dash.config.token}#run=exp1"
    base = f"http://127.0.0.1:{dash.port}"
    assert httpx.get(f"{base}/api/runs").status_code == 401
    assert httpx.get(f"{base}/api/runs", params={"token": "wrong-token-123"}).status_code == 401
    r = httpx.get(f"{base}/", params={"token": dash.config.token})
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert r.headers["content-security-policy"] == EMBED_CSP and "x-frame-options" not in r.headers
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    name, value = cookie.split(";")[0].split("=", 1)
    runs = httpx.get(f"{base}/api/runs", cookies={name: value})
    assert runs.status_code == 200 and [x["name"] for x in runs.json()["runs"]] == ["exp1"]
    auth = {"authorization": f"Bearer {dash.config.token}"}
    assert httpx.get(f"http://localhost:{dash.port}/api/runs", headers=auth).status_code == 200
    foreign = httpx.get(f"{base}/api/runs", headers={**auth, "host": f"evil.example:{dash.port}"})
    assert foreign.status_code == 403 and "DNS-rebinding" in foreign.json()["error"]
    post = httpx.post(
        f"{base}/api/runs/exp1/controls", json={"key": "pause", "value": True},
        headers={**auth, "origin": "http://localhost:8888"},
    )  # fmt: skip
    assert post.status_code == 403
    assert run.show() is dash  # type: ignore[attr-defined]  # one server per recorder


def test_the_server_follows_a_watch_loop_in_the_same_process(shown: tuple[NotebookDashboard, nn.Module, object]) -> None:
    dash, model, run = shown
    auth = {"authorization": f"Bearer {dash.config.token}"}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(3):
        x, y = torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=loss)  # type: ignore[attr-defined]
        losses.append(float(loss.detach()))
        got = httpx.get(f"http://127.0.0.1:{dash.port}/api/runs/exp1/scalars", headers=auth).json()
        assert got["last_step"] == step
        assert [p[1] for p in got["scalars"]["loss"]] == pytest.approx(losses, rel=1e-6)


def test_the_notebook_display_is_an_iframe_of_the_run(shown: tuple[NotebookDashboard, nn.Module, object]) -> None:
    dash, _, _ = shown
    html = dash._repr_html_()
    src = re.search(r'<iframe id="(convscope-[0-9a-f]{12})" src="([^"]+)"', html)
    assert src is not None
    assert src.group(2) == dash.url.replace("&", "&amp;")
    assert f'document.getElementById("{src.group(1)}")' in html  # the script that matches the notebook's host
    assert 'height="900"' in html


def test_show_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a directory: give a run directory"):
        cs.show(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"host must be one of localhost, 127.0.0.1"):
        cs.show(tmp_path, host="0.0.0.0")
    with pytest.raises(ValueError, match=r"height must be an int from 100 to 5000"):
        cs.show(tmp_path, height=10)


def test_show_over_a_folder_of_runs_opens_the_run_list(tmp_path: Path) -> None:
    with cs.show(tmp_path) as dash:
        assert dash.run is None and dash.url.endswith(f"?token={dash.config.token}")
        assert httpx.get(f"http://127.0.0.1:{dash.port}/api/runs", headers={"authorization": f"Bearer {dash.config.token}"}).json() == {"runs": []}
    assert not dash.running
