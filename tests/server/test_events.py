"""The live channel: what one watcher tells every page (exact payloads) and the SSE stream."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server.fakerun import fixture_writer

from convscope.config import ServeConfig
from convscope.runs import RunReader
from convscope.runs.watched import MARK_EVERY_S, WATCHED_FILE, is_watched
from convscope.server import create_app
from convscope.server.events import RunWatcher
from convscope.server.state import AppState

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
LOCAL = "http://127.0.0.1:8000"  # a loopback Host, as the server's guard wants (security.py)


def test_watcher_sends_what_changed(tmp_path: Path) -> None:
    w = fixture_writer(tmp_path, "live")
    try:
        watcher = RunWatcher(AppState(runs_root=tmp_path, config=ServeConfig()), "live")
        first = watcher.poll()
        assert first == [("step", {"last_step": 2, "status": "running", "stale": False, "snapshot_step": 2,
                                   "json": {"layers": 0, "predictions": 2, "findings": 2, "recording": None}})]  # fmt: skip
        assert watcher.poll() == []  # nothing new
        w.log_scalars(3, {"loss": 0.25})
        w.log_layer_stats(3, "conv1", {"dead_fraction": 0.5})
        w.commit(3)
        with RunReader(w.path) as r:
            assert r.send_control("pause", True) == 1
        events = watcher.poll()
        assert [name for name, _ in events] == ["scalars", "stats", "controls", "step"]
        assert events[0][1] == {"since": 2, "last_step": 3, "scalars": {"loss": [(3, 0.25)]}}
        assert events[1][1] == {"since": 2, "last_step": 3,
                                "stats": [{"step": 3, "layer": "conv1", "dead_fraction": 0.5}]}  # fmt: skip
        assert events[3][1]["last_step"] == 3
        [ctrl] = events[2][1]["controls"]
        assert (ctrl["id"], ctrl["key"], ctrl["result"]) == (1, "pause", None)
        w.ack_control(1, 3, result={"ok": True})
        [(name, payload)] = watcher.poll()
        assert name == "controls" and payload["controls"][0]["result"] == {"ok": True}
        assert watcher.poll() == []
    finally:
        w.close()


def test_sse_stream_says_hello_then_ends_on_shutdown(tmp_path: Path) -> None:
    fixture_writer(tmp_path, "fix").close(status="finished")
    app = create_app(tmp_path, ServeConfig(poll_s=0.05))
    with TestClient(app, base_url=LOCAL) as c, c.stream("GET", "/api/runs/fix/events") as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        lines: list[str] = []
        for line in res.iter_lines():
            lines.append(line)
            if line.startswith("data:") and len([x for x in lines if x.startswith("data:")]) == 2:
                break
        app.state.dash.stopping.set()  # what shutdown does: the stream ends by itself
    events = [x.removeprefix("event: ") for x in lines if x.startswith("event:")]
    data = [json.loads(x.removeprefix("data: ")) for x in lines if x.startswith("data:")]
    assert events == ["hello", "step"]
    assert data[0] == {"last_step": 2, "status": "finished", "stale": False}
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/runs/nope/events").status_code == 404


def test_broadcaster_close_is_clean(tmp_path: Path) -> None:
    app = create_app(tmp_path, ServeConfig())
    done = threading.Thread(target=lambda: asyncio.run(app.state.broadcaster.close()))
    done.start()  # a thread of its own: Playwright may own this thread's event loop
    done.join(timeout=10)
    assert app.state.dash.stopping.is_set()


def test_a_listened_running_run_is_marked_watched(tmp_path: Path) -> None:
    w = fixture_writer(tmp_path, "live")  # running
    fixture_writer(tmp_path, "done").close(status="finished")
    try:
        state = AppState(runs_root=tmp_path, config=ServeConfig())
        watcher = RunWatcher(state, "live")
        mark = tmp_path / "live" / WATCHED_FILE
        watcher.poll()
        assert is_watched(tmp_path / "live")  # the trainer now leaves a core to this server
        os.utime(mark, (100.0, 100.0))
        watcher._marked = time.monotonic() + 60  # (a mark a moment ago, whatever this machine's speed)
        watcher.poll()
        assert mark.stat().st_mtime == 100.0  # at most every MARK_EVERY_S
        watcher._marked = time.monotonic() - MARK_EVERY_S
        watcher.poll()
        assert is_watched(tmp_path / "live")
        w.set_meta("status", "paused")  # a paused run is still watched (not ended)
        w.commit(3)
        os.utime(mark, (100.0, 100.0))
        watcher._marked = time.monotonic() - MARK_EVERY_S
        assert watcher.poll()[-1][1]["status"] == "paused"
        assert is_watched(tmp_path / "live")
        ended = RunWatcher(state, "done")
        ended.poll()
        assert not (tmp_path / "done" / WATCHED_FILE).exists()  # an ended run's folder is left alone
    finally:
        w.close()


def _until_step(c: TestClient, headers: dict[str, str]) -> int:
    """Open the run's live stream with `headers` and read it up to its first `step` event."""
    with c.stream("GET", "/api/runs/live/events", headers=headers) as res:
        for line in res.iter_lines():
            if line.startswith("event: step"):
                break
        return res.status_code


def test_the_stream_marks_the_run_and_refuses_another_sites_page(tmp_path: Path) -> None:
    w = fixture_writer(tmp_path, "live")
    app = create_app(tmp_path, ServeConfig(poll_s=0.05))
    try:
        with TestClient(app, base_url=LOCAL) as c:
            for site in ("cross-site", "same-site"):
                res = c.get("/api/runs/live/events", headers={"Sec-Fetch-Site": site})
                assert res.status_code == 403
                assert res.json()["error"] == f"the live stream is the dashboard page's own (Sec-Fetch-Site: {site})"
            assert not (tmp_path / "live" / WATCHED_FILE).exists()  # no page of its own: not marked
            for headers in ({}, {"Sec-Fetch-Site": "same-origin"}):  # a client, the dashboard's page
                assert _until_step(c, headers) == 200
                assert is_watched(tmp_path / "live")
            app.state.dash.stopping.set()
    finally:
        w.close()
