"""One reader per run reused across requests, answers re-read only after a commit (data_version),
and the live channel's events serialised once for every client."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server.fakerun import fixture_writer, z_of

from convscope.config import ServeConfig
from convscope.runs import RunReader
from convscope.server import create_app
from convscope.server.events import RunWatcher, _sse
from convscope.server.readers import Readers
from convscope.server.state import AppState

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
LOCAL = "http://127.0.0.1:8000"


def test_one_reader_serves_every_request(tmp_path: Path) -> None:
    fixture_writer(tmp_path, "fix").close(status="finished")
    app = create_app(tmp_path, ServeConfig())
    state: AppState = app.state.dash
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/runs/fix").json()["last_step"] == 2
        assert c.get("/api/runs/fix/snapshots").json()["steps"] == [0, 2]
        for kind in ("a", "weight", "grad_a"):
            res = c.get("/api/runs/fix/image.png", params={"layer": "conv1", "kind": kind})
            assert res.status_code == 200 and res.headers["x-step"] == "2"
        assert state.readers.opened == 1 and len(state.readers) == 1
        with state.reader("fix") as r1, state.reader("fix") as r2:
            assert r1 is r2
        assert c.get("/api/runs/nope/snapshots").status_code == 404
    # shutdown closed it: the reader no longer answers
    with pytest.raises(Exception, match="closed"):
        r1.meta()


def test_a_commit_is_seen_after_data_version_changes(tmp_path: Path) -> None:
    w = fixture_writer(tmp_path, "live")
    try:
        state = AppState(runs_root=tmp_path, config=ServeConfig())
        calls: list[int] = []

        def steps(r: RunReader) -> list[int]:
            calls.append(1)
            return r.snapshot_steps("conv1", "a")

        with state.open_run("live") as run:
            v0 = run.version()
            assert run.memo(("a",), steps) == [0, 2]
            assert run.version() == v0  # nothing committed: same version, answer reused
            assert run.memo(("a",), steps) == [0, 2] and len(calls) == 1
            w.log_snapshot(5, "conv1", "a", z_of(5).clamp_min(0))
            assert run.memo(("a",), steps) == [0, 2] and len(calls) == 1  # logged, not committed
            w.commit(5)
            assert run.version() != v0
            assert run.memo(("a",), steps) == [0, 2, 5] and len(calls) == 2
            assert run.reader.last_step() == 5  # the shared reader sees the commit too
        with TestClient(create_app(tmp_path, ServeConfig()), base_url=LOCAL) as c:
            assert c.get("/api/runs/live/snapshots").json()["steps"] == [0, 2, 5]
            w.log_snapshot(6, "conv1", "a", z_of(6).clamp_min(0))
            w.commit(6)
            snap = c.get("/api/runs/live/snapshots").json()
            assert snap["steps"] == [0, 2, 5, 6] and snap["series"]["conv1"]["a"] == [0, 6, 4]
    finally:
        w.close()


def test_watcher_rereads_only_after_a_commit(tmp_path: Path) -> None:
    w = fixture_writer(tmp_path, "live")
    try:
        watcher = RunWatcher(AppState(runs_root=tmp_path, config=ServeConfig()), "live")
        assert [name for name, _ in watcher.poll()] == ["step"]
        assert watcher.full_polls == 1
        assert watcher.poll() == [] and watcher.poll() == []
        assert watcher.full_polls == 1  # no commit: data_version unchanged, nothing re-read
        w.log_scalars(3, {"loss": 0.25})
        w.commit(3)
        events = watcher.poll()
        assert watcher.full_polls == 2
        assert events[0] == ("scalars", {"since": 2, "last_step": 3, "scalars": {"loss": [(3, 0.25)]}})
        assert events[-1][0] == "step" and events[-1][1]["last_step"] == 3
    finally:
        w.close()


def test_watcher_still_tells_staleness_without_commits(tmp_path: Path) -> None:
    w = fixture_writer(tmp_path, "live")
    try:
        state = AppState(runs_root=tmp_path, config=ServeConfig(stale_after_s=0.05))
        watcher = RunWatcher(state, "live")
        [(_, first)] = watcher.poll()
        assert first["stale"] is False
        time.sleep(0.1)  # the trainer says nothing for longer than stale_after_s
        [(name, payload)] = watcher.poll()
        assert name == "step" and payload == {**first, "stale": True}
        assert watcher.full_polls == 1
    finally:
        w.close()


def test_twenty_clients_get_the_same_event_bytes(tmp_path: Path) -> None:
    w = fixture_writer(tmp_path, "live")

    async def main() -> list[list[str | None]]:
        state = AppState(runs_root=tmp_path, config=ServeConfig(poll_s=0.01))
        watcher = RunWatcher(state, "live")
        watcher.poll()  # the baseline, as the first stream does
        queues: list[asyncio.Queue[str | None]] = [asyncio.Queue() for _ in range(20)]
        watcher.queues.update(queues)
        task = asyncio.create_task(watcher.run_loop())
        w.log_scalars(3, {"loss": 0.25})
        w.commit(3)
        for _ in range(500):
            if all(q.qsize() >= 2 for q in queues):
                break
            await asyncio.sleep(0.01)
        state.stopping.set()
        await task
        return [[q.get_nowait() for _ in range(q.qsize())] for q in queues]

    try:
        got = asyncio.run(main())
    finally:
        w.close()
    first = got[0]
    assert first[0] == _sse("scalars", {"since": 2, "last_step": 3, "scalars": {"loss": [(3, 0.25)]}})
    assert first[-1] is not None and first[-1].startswith("event: step\ndata: ")
    for frames in got[1:]:
        assert frames == first
        assert all(a is b for a, b in zip(frames, first, strict=True))  # serialised once, shared


def test_a_replaced_run_gets_a_new_reader(tmp_path: Path) -> None:
    fixture_writer(tmp_path, "fix").close(status="finished")
    readers = Readers(max_open=2)
    with readers.use("fix", tmp_path / "fix") as old:
        assert old.reader.last_step() == 2
        shutil.rmtree(tmp_path / "fix")
        w = fixture_writer(tmp_path, "fix")
        w.log_scalars(9, {"loss": 1.0})
        w.commit(9)
        w.close(status="finished")
        with readers.use("fix", tmp_path / "fix") as new:
            assert new is not old and new.reader.last_step() == 9
        assert not old.closed  # still in use by the outer request
    assert old.closed and readers.opened == 2


def test_least_recently_used_runs_close_past_max_open(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        fixture_writer(tmp_path, name).close(status="finished")
    readers = Readers(max_open=2)
    opened = []
    for name in ("a", "b", "c"):
        with readers.use(name, tmp_path / name) as run:
            opened.append(run)
    assert [r.closed for r in opened] == [True, False, False] and len(readers) == 2
    readers.close()
    assert all(r.closed for r in opened) and len(readers) == 0
