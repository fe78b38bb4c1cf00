"""The writer thread: takes committed steps from `RunWriter.commit` and writes them, compressed, in
one SQLite transaction per `every` seconds (0.25 s by default), so a training step pays for a list
append instead of zlib and a transaction.

    c = Committer(db, Pruner(Retention()), every=0.25, background=True, last_step=None)
    c.submit(batch)        # a whole committed step (or several): returns at once
    c.sync()               # waits until everything submitted is in the database (raises its error)
    c.close()              # writes what is left, stops the thread

- A transaction holds whole batches only: a reader never sees half a step.
- The first batch after a quiet spell is written at once; while batches keep coming, one
  transaction per `every` seconds holds them all. A batch with snapshots (pictures a page is
  waiting for; every ~2 s from `watch()`) is written at once. `kill -9` loses what was submitted since the last
  transaction: `every` seconds plus one transaction (more only when snapshots come faster than
  the thread compresses them: then `submit` waits while MAX_QUEUE_BYTES of them are queued).
- A failed transaction (a lock held past RETRY_S, a full disk) keeps its batches queued and is
  tried again a second later; the error is raised once by the next `RunWriter` call.
- Within one process a reader sees what the writer committed: `sync_local(run_dir)` (called by
  every `RunReader` query) waits for a live writer of that run to write its queue first.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convscope.runs.codec import Encoded, pack
from convscope.runs.pruning import Pruner
from convscope.runs.schema import RETRY_S, bound_wal, connect_rw, retry, write_txn
from convscope.runs.values import sql_real

FAILED_RETRY_S = 1.0  # a failed transaction is tried again after this
MAX_QUEUE_BYTES = 256 * 2**20  # submit waits while the snapshots queued take more (back-pressure)
TXN_BYTES = 32 * 2**20  # a transaction takes queued batches up to this many bytes of snapshots
_LIVE: weakref.WeakValueDictionary[str, Committer] = weakref.WeakValueDictionary()
_LIVE_LOCK = threading.Lock()


@dataclass
class Batch:
    """What one `commit` hands over: checked values, snapshots as float32 copies (compressed by the
    writer thread), keyed so a later log of the same key replaces an earlier one."""

    scalars: dict[tuple[str, int], float] = field(default_factory=dict)
    stats: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    snapshots: dict[tuple[str, str, int], np.ndarray | Encoded] = field(default_factory=dict)
    json: dict[tuple[str, int], str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    max_step: int | None = None  # the highest step logged
    step: int | None = None  # the committed step: meta "last_step" (None: meta and heartbeat only)
    time: float = 0.0  # Unix seconds of the commit: meta "updated" (the trainer's heartbeat)

    def note(self, step: int) -> None:
        self.max_step = step if self.max_step is None else max(self.max_step, step)

    def has_step_data(self) -> bool:
        return bool(self.scalars or self.stats or self.snapshots or self.json)

    def nbytes(self) -> int:
        return sum(
            a.nbytes if isinstance(a, np.ndarray) else len(a.data) for a in self.snapshots.values()
        )


def _thread_clock(thread: threading.Thread) -> int | None:
    """The CPU clock id of a running thread, where the platform has one (Linux, macOS)."""
    get = getattr(time, "pthread_getcpuclockid", None)
    if get is None or thread.ident is None:
        return None
    try:
        clock: int = get(thread.ident)
        time.clock_gettime(clock)
    except OSError:
        return None
    return clock


def sync_local(run_dir: str) -> None:
    """Wait until a writer of `run_dir` (a resolved path) in this process has written its queue."""
    committer = _LIVE.get(run_dir)
    if committer is not None and committer.behind():
        committer.sync(raise_error=False, timeout=RETRY_S)


class Committer:
    """Writes batches in transactions, on a thread of its own when `background`."""

    def __init__(
        self, db: Path, pruner: Pruner, *, every: float, background: bool, last_step: int | None
    ) -> None:
        self.db = db
        self.pruner = pruner
        self.every = every
        self.db_step = last_step  # the last step in the database
        self.txn_seconds: collections.deque[float] = collections.deque(maxlen=10_000)
        self.cpu_s = 0.0  # CPU seconds the writer thread spent writing (a recorder's budget charges it)
        # of which on transactions holding snapshots (compressing pictures, the big ones): a
        # recorder charges those to its pictures, and learns what a snapshot costs from
        # `picture_costs` (CPU seconds, snapshots) per such transaction, which it drains
        self.picture_cpu_s = 0.0
        self.picture_costs: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self._picture_start: float | None = None  # thread CPU at the start of one under way
        self._conn = connect_rw(db)
        bound_wal(self._conn, pruner.retention.budget_bytes)
        self.pruner.load(self._conn)
        self._cond = threading.Condition()
        self._queue: list[Batch] = []
        self._queued = self._written = self._wanted = self._failures = self._queue_bytes = 0
        self._error: BaseException | None = None
        self._due = 0.0  # monotonic time before which no new transaction starts
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._clock_id: int | None = None  # the writer thread's CPU clock (Linux), read live
        self._cpu_seen = 0.0
        if background:
            self._thread = threading.Thread(
                target=self._run, name="convscope-run-writer", daemon=True
            )
            self._thread.start()
            self._clock_id = _thread_clock(self._thread)
            with _LIVE_LOCK:
                _LIVE[str(db.parent.resolve())] = self

    # -- the caller's side ------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        if self._thread is None:
            self._write([batch])
            return
        size = batch.nbytes()
        with self._cond:  # a writer thread far behind (a huge snapshot every step) slows commit
            while (
                self._queue_bytes > MAX_QUEUE_BYTES
                and self._error is None
                and self._thread.is_alive()
            ):
                self._cond.wait()
            self._queue.append(batch)
            self._queued += 1
            self._queue_bytes += size
            self._cond.notify_all()

    def cpu_now(self) -> float:
        """CPU seconds the writer thread has used so far: its own CPU clock read now (a transaction
        under way counts as it runs, so a caller timing an interval with it charges the writer's
        work to the interval it happened in), else what its finished transactions took."""
        value = self.cpu_s
        thread, clock = self._thread, self._clock_id
        if thread is not None and clock is not None and thread.is_alive():
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                value = max(value, time.clock_gettime(clock))
        self._cpu_seen = max(self._cpu_seen, value)  # never backwards (the clock ends with the thread)
        return self._cpu_seen

    def cpu_split(self) -> tuple[float, float]:
        """(`cpu_now()`, the part of it spent on transactions holding snapshots), read live."""
        with self._cond:  # (the thread updates both parts under it, so the two agree)
            total = self.cpu_now()
            pictures = self.picture_cpu_s
            if self._picture_start is not None:
                pictures += max(total - self._picture_start, 0.0)
        return total, min(pictures, total)

    def behind(self) -> bool:
        return self._written < self._queued

    def raise_error(self) -> None:
        """Raise the error of the last transaction if it failed (its batches are still queued and
        are tried again every FAILED_RETRY_S; the error clears when one succeeds)."""
        with self._cond:
            err = self._error
        if err is not None:
            raise err

    def sync(self, *, raise_error: bool = True, timeout: float | None = None) -> None:
        """Wait until every batch submitted so far is in the database, or a transaction failed."""
        if self._thread is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target, failures = self._queued, self._failures
            self._wanted = max(self._wanted, target)
            self._cond.notify_all()
            while self._written < target and self._failures == failures and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
        if raise_error:
            self.raise_error()

    def close(self) -> None:
        """Write what is queued, stop the thread, close the connection; raises a final failure."""
        try:
            if self._thread is not None:
                with self._cond:
                    self._stopping = True
                    self._cond.notify_all()
                self._thread.join()
        finally:
            with _LIVE_LOCK:
                key = str(self.db.parent.resolve())
                if _LIVE.get(key) is self:
                    del _LIVE[key]
            self._conn.close()
        self.raise_error()

    # -- the writer thread ------------------------------------------------------------------
    def _next(self) -> list[Batch] | None:
        """The batches of the next transaction, once it is due; None when the thread should end."""
        with self._cond:
            while True:
                now = time.monotonic()
                if not self._queue:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                if self._error is not None:  # the last try failed: again when due, not at close
                    if self._stopping:
                        return None
                    if now >= self._due:
                        return self._take()
                elif self._stopping or self._wanted > self._written or now >= self._due or self._pictures():
                    return self._take()
                self._cond.wait(max(self._due - now, 0.001))

    def _pictures(self) -> bool:
        """A queued step has snapshots (every ~2 s): a page waits for those, so they go at once."""
        return any(b.snapshots for b in self._queue)

    def _take(self) -> list[Batch]:
        """The queue's first batches, up to TXN_BYTES of snapshots (at least one batch): a writer
        thread that fell behind catches up in transactions of bounded length."""
        taken: list[Batch] = []
        size = 0
        for batch in self._queue:
            size += batch.nbytes()
            if taken and size > TXN_BYTES:
                break
            taken.append(batch)
        return taken

    def _run(self) -> None:
        while (batches := self._next()) is not None:
            start, cpu = time.monotonic(), time.thread_time()
            pictures = sum(1 for b in batches if b.snapshots)
            if pictures:
                with self._cond:
                    self._picture_start = cpu
            try:
                self._write(batches)
            except BaseException as exc:  # kept for the caller's thread, which raises it
                self._spent(cpu, pictures, ok=False)
                with self._cond:
                    self._error = exc
                    self._failures += 1
                    self._due = time.monotonic() + FAILED_RETRY_S
                    self._cond.notify_all()
                continue
            self._spent(cpu, pictures, ok=True)
            with self._cond:
                del self._queue[: len(batches)]
                self._queue_bytes = sum(b.nbytes() for b in self._queue)
                self._written += len(batches)
                self._error = None
                self._due = start + self.every if not self._queue else 0.0  # behind: go on
                self._cond.notify_all()

    def _spent(self, start: float, pictures: int, *, ok: bool) -> None:
        """A transaction begun at thread CPU `start` is over; `pictures` of its batches brought
        snapshots. The clock is read under the lock, so `cpu_split()` never counts more than this
        adds. A failed one gives no sample of a snapshot's cost (its retry, with the snapshots
        compressed already, would give a small one: neither is typical), its CPU is counted all the same."""
        with self._cond:
            cpu = time.thread_time() - start
            self.cpu_s += cpu
            if pictures:
                self.picture_cpu_s += cpu
                if ok:
                    self.picture_costs.append((cpu, pictures))
                self._picture_start = None

    def _write(self, batches: list[Batch]) -> None:
        """All `batches` in one transaction, pruned to the retention first."""
        start = time.perf_counter()
        scalars: dict[tuple[str, int], float] = {}
        stats: dict[tuple[str, int], dict[str, float]] = {}
        snaps: dict[tuple[str, str, int], Encoded] = {}
        values: dict[tuple[str, int], str] = {}
        meta: dict[str, str] = {}
        step, updated = self.db_step, 0.0
        for b in batches:
            for key, snap in b.snapshots.items():  # compressed once, kept for a retry
                b.snapshots[key] = snap if isinstance(snap, Encoded) else pack(snap)
            scalars.update(b.scalars)
            for where, row in b.stats.items():
                stats.setdefault(where, {}).update(row)
            snaps.update((k, e) for k, e in b.snapshots.items() if isinstance(e, Encoded))
            values.update(b.json)
            meta.update(b.meta)
            if b.step is not None:
                step = b.step if step is None else max(step, b.step)
            updated = max(updated, b.time)
        meta["updated"] = json.dumps(updated or time.time())
        if step is not None:
            meta["last_step"] = json.dumps(step)
        incoming: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for (layer, kind, s), e in snaps.items():
            incoming.setdefault((layer, kind), []).append((s, len(e.data)))
        other = sum(len(n) + 32 for n, _ in scalars) + sum(len(v) + 48 for v in values.values())
        other += sum(len(la) + 48 + 24 * len(row) for (la, _), row in stats.items())
        may_exist = self.db_step  # rows of this step can already be in the database

        def body(c: sqlite3.Connection) -> None:
            skip = self.pruner.prune(c, incoming, other)
            c.executemany(
                "INSERT OR REPLACE INTO scalars (name, step, value) VALUES (?, ?, ?)",
                [(n, s, sql_real(v)) for (n, s), v in scalars.items()],
            )
            for (layer, s), row in stats.items():
                merged = row
                if may_exist is not None and s <= may_exist:
                    old = c.execute(
                        "SELECT stats FROM layer_stats WHERE layer = ? AND step = ?", (layer, s)
                    ).fetchone()
                    merged = (json.loads(old[0]) | row) if old else row
                c.execute(
                    "INSERT OR REPLACE INTO layer_stats (step, layer, stats) VALUES (?, ?, ?)",
                    (s, layer, json.dumps(merged, allow_nan=True)),
                )
            c.executemany(
                "INSERT OR REPLACE INTO snapshots (layer, kind, step, dtype, shape, scale_exp, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (layer, kind, s, e.dtype, json.dumps(list(e.shape)), e.scale_exp, e.data)
                    for (layer, kind, s), e in snaps.items()
                    if (layer, kind, s) not in skip
                ],
            )
            c.executemany(
                "INSERT OR REPLACE INTO json_values (key, step, value) VALUES (?, ?, ?)",
                [(k, s, v) for (k, s), v in values.items()],
            )
            if self.pruner.note is not None:
                meta["thinned"] = self.pruner.note
            c.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())

        def attempt() -> None:
            try:
                write_txn(self._conn, body)
            except BaseException:
                self.pruner.load(self._conn)  # its counts followed the rolled-back deletes
                raise

        retry(attempt, f"commit step {step}")
        self.db_step = step
        self.txn_seconds.append(time.perf_counter() - start)
