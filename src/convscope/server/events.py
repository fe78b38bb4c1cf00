"""The live channel: server-sent events at GET /api/runs/{run}/events.

One watcher per run polls the store every `poll_s` seconds while someone listens and fans
what changed out to every client, so 20 open pages cost the trainer's disk no more than one:

  hello     {"last_step", "status", "stale"}                       once, on connect
  step      {"last_step", "status", "stale", "snapshot_step", "json": {key: step}}
            when the last committed step, the status or liveness changes
  scalars   {"since", "last_step", "scalars": {name: [[step, value], ...]}}   new points
  stats     {"since", "last_step", "stats": [{"step", "layer", ...}]}           new rows
  controls  {"controls": [...]}   controls sent or answered since the last event
  problem   {"error"}             the store could not be read this time (the watcher keeps trying)
  ": ping"  a comment line every `heartbeat_s` seconds of silence (keeps proxies from closing)

Each event is serialised once and the same bytes go to every client. The watcher asks the
store's `PRAGMA data_version` first (readers.py) and re-reads nothing when no commit happened
since its last poll (only liveness, which changes with time). A client that falls behind (its
queue full) is dropped; EventSource reconnects by itself.
While a page listens, the watcher also keeps the run's `watched` mark fresh (runs/watched.py):
the built-in trainer then leaves a core to this server. So another site's page may not open a
stream (a browser's `Sec-Fetch-Site` other than same-origin or none: 403), though it is a GET.
On shutdown (`AppState.stopping`) every stream ends, so the server can close cleanly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from convscope.runs import CLOSE_STATUSES, RunReader
from convscope.runs.watched import MARK_EVERY_S, mark_watched

from .errors import ApiError
from .jsonsafe import dumps
from .routes.data import layer_names, public_control
from .state import AppState

Event = tuple[str, dict[str, Any]]
JSON_KEYS = ("layers", "predictions", "findings", "recording")  # the page refetches these when their step moves
QUEUE_SIZE = 256  # events a slow client may lag behind before it is dropped
WAIT_S = 0.25  # how often a stream looks at `stopping` while idle


class RunWatcher:
    """Polls one run for what changed; `poll()` runs in a worker thread."""

    def __init__(self, state: AppState, run: str) -> None:
        self.state = state
        self.run = run
        self.queues: set[asyncio.Queue[str | None]] = set()  # serialised events
        self.task: asyncio.Task[None] | None = None
        self.current: dict[str, Any] | None = None  # last "step" payload
        self._last: int | None = None
        self._ctrl_floor = 0  # controls with id > floor may still change
        self._ctrl_seen: dict[int, Any] = {}  # id -> (applied_step, result) sent
        self._json_steps: dict[str, int | None] = {}
        self._version: int | None = None  # the store's data_version at the last full poll
        self.full_polls = 0  # polls that re-read the store (tests)
        self._marked: float | None = None  # monotonic time of the last `watched` mark

    def poll(self) -> list[Event]:
        events = self._read()
        self._mark()
        return events

    def _read(self) -> list[Event]:
        with self.state.open_run(self.run) as run:
            version = run.version()
            if version == self._version and self.current is not None:  # no commit since
                stale = run.reader.is_stale(self.state.config.stale_after_s)
                if stale == self.current.get("stale"):
                    return []
                self.current = {**self.current, "stale": stale}
                return [("step", self.current)]
            events = self._poll(run.reader)
            self._version = version  # read before the data: a commit in between shows next time
            self.full_polls += 1
            return events

    def _mark(self) -> None:
        """A page listens: refresh the run's `watched` mark (at most every MARK_EVERY_S), while
        the run has not ended (running or paused: an ended run's folder is left as it is)."""
        now = time.monotonic()
        due = self._marked is None or now - self._marked >= MARK_EVERY_S
        status = (self.current or {}).get("status")
        if due and status is not None and status not in CLOSE_STATUSES:
            self._marked = now
            mark_watched(self.state.run_dir(self.run))

    def _poll(self, r: RunReader) -> list[Event]:
        events: list[Event] = []
        meta = r.meta()
        last = r.last_step()
        status = str(meta.get("status", "running"))
        ctrls = r.controls(since_id=self._ctrl_floor)
        changed = [
            c for c in ctrls if self._ctrl_seen.get(c["id"]) != (c["applied_step"], c["result"])
        ]
        for c in changed:
            self._ctrl_seen[c["id"]] = (c["applied_step"], c["result"])
        open_ids = [c["id"] for c in ctrls if c["applied_step"] is None and c["result"] is None]
        if ctrls:
            self._ctrl_floor = (min(open_ids) - 1) if open_ids else max(c["id"] for c in ctrls)
        first_poll = self.current is None
        if last != self._last and not first_poll:
            since = self._last if self._last is not None else -1
            scalars = r.scalars(since=since)
            if any(scalars.values()):
                events.append(
                    ("scalars", {"since": since, "last_step": last, "scalars": scalars})
                )
            stats = r.layer_stats(since=since)
            if stats:
                events.append(("stats", {"since": since, "last_step": last, "stats": stats}))
        if last != self._last or first_poll:
            self._json_steps = {
                k: (None if (f := r.json(k)) is None else f[0]) for k in JSON_KEYS
            }
        snapshot_step = self._snapshot_step(r) if (last != self._last or first_poll) else (
            self.current or {}).get("snapshot_step")  # fmt: skip
        self._last = last
        stale = r.is_stale(self.state.config.stale_after_s)
        payload = {"last_step": last, "status": status, "stale": stale,
                   "snapshot_step": snapshot_step, "json": dict(self._json_steps)}  # fmt: skip
        if changed and not first_poll:  # before "step": an answer shows before the status it caused
            events.append(("controls", {"controls": [public_control(c) for c in changed]}))
        if payload != self.current:
            self.current = payload
            events.append(("step", payload))
        return events

    def _snapshot_step(self, r: Any) -> int | None:
        names = layer_names(r)
        if not names:
            return None
        for kind in ("a", "weight"):
            steps = r.snapshot_steps(names[0], kind)
            if steps:
                return int(steps[-1])
        return None

    async def run_loop(self) -> None:
        poll_s = self.state.config.poll_s
        while self.queues and not self.state.stopping.is_set():
            try:
                events = await run_in_threadpool(self.poll)
            except Exception as err:  # the run vanished or the store is busy: tell, keep trying
                events = [_problem(err)]
            frames = [_sse(*ev) for ev in events]  # once, whatever the number of clients
            for q in list(self.queues):
                for ev in frames:
                    if q.full():  # too slow: drop it (its EventSource reconnects)
                        self.queues.discard(q)
                        while not q.empty():
                            q.get_nowait()
                        q.put_nowait(None)
                        break
                    q.put_nowait(ev)
            await asyncio.sleep(poll_s)


class Broadcaster:
    """The watchers of one app (no module-global state) and the /events route."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.watchers: dict[str, RunWatcher] = {}
        self._lock = asyncio.Lock()

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api")

        @router.get("/runs/{run}/events")
        async def events(run: str, request: Request) -> StreamingResponse:
            site = request.headers.get("sec-fetch-site")
            if site is not None and site not in ("same-origin", "none"):  # a stream marks the run watched
                raise ApiError(403, f"the live stream is the dashboard page's own (Sec-Fetch-Site: {site[:40]})")
            await self._watcher(run)  # a 404 or 422 (ApiError) before the stream starts
            return StreamingResponse(
                self.stream(run),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        return router

    async def _watcher(self, run: str) -> RunWatcher:
        """The run's watcher; a new one (none yet, or its loop ended with its last page) is polled
        once first: the baseline that `hello` tells, and where an unreadable run raises."""
        async with self._lock:  # one watcher per run, also when pages connect at once
            watcher = self.watchers.get(run)
            if watcher is None or (watcher.task is not None and watcher.task.done()):
                watcher = RunWatcher(self.state, run)
                await run_in_threadpool(watcher.poll)
                self.watchers[run] = watcher
            return watcher

    async def stream(self, run: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        try:
            watcher = await self._watcher(run)
        except Exception as err:  # unreadable since the route's check: said once, as run_loop would
            yield _sse(*_problem(err))
            return
        async with self._lock:
            watcher.queues.add(queue)
            if watcher.task is None or watcher.task.done():
                watcher.task = asyncio.create_task(watcher.run_loop())
        try:
            hello = {k: (watcher.current or {}).get(k) for k in ("last_step", "status", "stale")}
            yield "retry: 2000\n\n"
            yield _sse("hello", hello)
            if watcher.current is not None:
                yield _sse("step", watcher.current)
            heartbeat = self.state.config.heartbeat_s
            quiet_since = time.monotonic()
            while not self.state.stopping.is_set():
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=WAIT_S)
                except TimeoutError:
                    if time.monotonic() - quiet_since >= heartbeat:
                        quiet_since = time.monotonic()
                        yield ": ping\n\n"
                    continue
                if ev is None:  # dropped for falling behind
                    return
                quiet_since = time.monotonic()
                yield ev
        finally:
            watcher.queues.discard(queue)

    async def close(self) -> None:
        self.state.stopping.set()
        tasks = [w.task for w in self.watchers.values() if w.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.watchers.clear()


def _problem(err: Exception) -> Event:
    """The "problem" event for an error reading the run: its message on one line."""
    return "problem", {"error": " ".join(str(err).split())[:300]}


def _sse(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {dumps(payload)}\n\n"
