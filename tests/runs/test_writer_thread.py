"""The writer thread (issue 10 goal 1): commits are handed over and written in one transaction per
`write_every`; a reader that does not wait for the writer (plain sqlite3, another process) sees
whole steps only; `kill -9` loses exactly the steps not written yet; a failed transaction is
raised in the caller's thread and retried; a writer dropped without close still writes its queue."""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from convscope.runs import RunReader, RunWriter
from convscope.runs.pruning import Pruner

LAYERS = ("conv1", "conv2")


def raw(run: Path) -> sqlite3.Connection:
    """A reader that knows nothing of the writer (not RunReader: it waits for a local writer)."""
    return sqlite3.connect(f"{(run / 'run.sqlite').as_uri()}?mode=ro", uri=True, check_same_thread=False)


def last_step(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'last_step'").fetchone()
    return None if row is None or row[0] == "null" else int(row[0])


def whole_steps(conn: sqlite3.Connection) -> int:
    """In ONE read transaction: every step with a scalar has its stats, snapshots (all or none) and json, and
    last_step is the newest of them. Returns how many steps there are."""
    conn.execute("BEGIN")
    try:
        steps = [s for (s,) in conn.execute("SELECT step FROM scalars WHERE name = 'loss' ORDER BY step")]
        assert steps == list(range(len(steps)))
        assert last_step(conn) == (steps[-1] if steps else None)
        for table, per_step in (("layer_stats", 2), ("snapshots", 2), ("json_values", 1)):
            counts = dict(conn.execute(f"SELECT step, COUNT(*) FROM {table} GROUP BY step").fetchall())
            whole = {per_step, 0} if table == "snapshots" else {per_step}  # a step may log no pictures
            assert all(counts.get(s, 0) in whole for s in steps), f"half a step in {table}"
    finally:
        conn.execute("COMMIT")
    return len(steps)


def write_step(w: RunWriter, step: int, *, pictures: bool = True) -> None:
    w.log_scalars(step, {"loss": float(step)})
    for layer in LAYERS:
        w.log_layer_stats(step, layer, {"a_mean": float(step)})
        if pictures:
            w.log_snapshot(step, layer, "a", torch.full((1, 4, 8, 8), float(step)))
    w.log_json(step, "tick", step)


def test_steps_wait_for_the_next_transaction_and_flush_writes_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    w = RunWriter(run, write_every=3600.0)  # after a first transaction, the next is due in an hour
    conn = raw(run)
    write_step(w, 0)
    w.commit(0)
    w.flush()
    assert last_step(conn) == 0 and w.written_step == 0 and len(w.txn_seconds) == 1
    for step in range(1, 51):
        write_step(w, step, pictures=False)
        w.commit(step)
    assert w.last_step == 50 and w.written_step == 0  # handed over, not written yet
    assert last_step(conn) == 0 and whole_steps(conn) == 1
    w.flush()  # one transaction holds all 50
    assert last_step(conn) == 50 and whole_steps(conn) == 51 and len(w.txn_seconds) == 2
    write_step(w, 51, pictures=False)
    w.commit(51)
    write_step(w, 52)  # a step with snapshots: a page waits for it, it is written at once (with 51)
    w.commit(52)
    deadline = time.monotonic() + 30
    while w.written_step != 52 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.written_step == 52 and last_step(conn) == 52 and len(w.txn_seconds) == 3
    with RunReader(run) as r:  # in the writer's process a RunReader waits for it: no flush needed
        write_step(w, 53, pictures=False)
        w.commit(53)
        assert r.last_step() == 53 and r.scalars("loss", since=52) == {"loss": [(53, 53.0)]}
        got = r.snapshot("conv2", "a", 52)
        assert got is not None and torch.equal(got[1], torch.full((1, 4, 8, 8), 52.0))
    w.close()
    conn.close()


def test_a_plain_reader_never_sees_half_a_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    w = RunWriter(run, write_every=0.01)
    conn = raw(run)
    seen: list[int] = []

    def train() -> None:
        for step in range(300):
            write_step(w, step)
            w.commit(step)
            time.sleep(0.001)  # a (very fast) training step

    t = threading.Thread(target=train)
    t.start()
    while (n := whole_steps(conn)) < 300:  # until the writer thread has written them all
        seen.append(n)
    t.join()
    w.close()
    assert whole_steps(conn) == 300
    assert len(set(seen)) >= 3  # it really read while steps were being written
    conn.close()


CHILD = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from convscope.runs import RunWriter
from test_writer_thread import write_step
w = RunWriter(sys.argv[1], write_every=3600.0)
write_step(w, 0); w.commit(0); w.flush()
for step in range(1, 21):
    write_step(w, step, pictures=False); w.commit(step)  # no pictures: they wait for the next transaction
print(w.last_step, w.written_step, flush=True)
sys.stdin.read()  # wait to be killed
"""


def test_kill_9_loses_exactly_the_unwritten_steps(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), str(Path(__file__).parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.split() == ["20", "0"], proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    conn = raw(run)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert whole_steps(conn) == 1 and last_step(conn) == 0  # steps 1..20 were never written
    conn.close()
    w = RunWriter(run, resume=True)  # the lock died with the child
    assert w.last_step == 0
    write_step(w, 1)
    w.close()
    conn = raw(run)
    assert whole_steps(conn) == 2
    conn.close()


def test_a_failed_transaction_is_raised_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Pruner.prune
    fail = [sqlite3.OperationalError("disk I/O error")]

    def flaky(self: Pruner, *args: object, **kwargs: object) -> set[tuple[str, str, int]]:
        if fail:
            raise fail.pop()
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Pruner, "prune", flaky)
    run = tmp_path / "run"
    w = RunWriter(run)
    write_step(w, 0)
    w.commit(0)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        w.flush()
    write_step(w, 1)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        w.commit(1)  # refused while the store fails: step 1 stays buffered
    w.flush()  # the writer thread tried again (a second later) and wrote step 0
    w.commit(1)
    w.close()
    conn = raw(run)
    assert whole_steps(conn) == 2
    conn.close()


def test_a_writer_dropped_without_close_still_writes_its_queue(tmp_path: Path) -> None:
    run = tmp_path / "run"
    w = RunWriter(run, write_every=3600.0)
    write_step(w, 0)
    w.commit(0)
    w.flush()
    write_step(w, 1)
    w.commit(1)  # queued for an hour
    del w
    gc.collect()
    conn = raw(run)
    assert whole_steps(conn) == 2
    conn.close()
    RunWriter(run, resume=True).close("stopped")  # and its lock was released


def test_the_writer_threads_cpu_is_read_live_and_only_grows(tmp_path: Path) -> None:
    """background_cpu_s reads the writer thread's own CPU clock: it covers at least the finished
    transactions' CPU (what the budget charged before), never goes back, and is 0 inline."""
    w = RunWriter(tmp_path / "run", write_every=0.05)
    try:
        seen = [w.background_cpu_s]
        for step in range(20):
            write_step(w, step)
            w.commit(step)
            seen.append(w.background_cpu_s)
        w.flush()
        seen.append(w.background_cpu_s)
        assert seen == sorted(seen) and seen[-1] > 0
        assert seen[-1] >= w._committer.cpu_s > 0  # the thread's clock holds every transaction's CPU
    finally:
        w.close()
    assert w.background_cpu_s >= seen[-1]  # the thread ended: the last reading stays
    inline = RunWriter(tmp_path / "inline", background=False)
    try:
        write_step(inline, 0)
        inline.commit(0)
        assert inline.background_cpu_s == 0.0
    finally:
        inline.close()


def test_the_cpu_of_transactions_with_snapshots_is_told_apart(tmp_path: Path) -> None:
    """A recorder charges the writer thread's snapshot work to its pictures: `background_cpu_split`
    gives that part of the thread's CPU, and `picture_costs()` one (CPU, snapshots) per transaction
    that held snapshots, once; a transaction of scalars only adds to neither. Inline: nothing."""
    w = RunWriter(tmp_path / "run", write_every=0.0)
    try:
        w.log_scalars(0, {"loss": 1.0})
        w.commit(0)
        w.flush()
        assert w.background_cpu_split[1] == 0.0 and w.picture_costs() == []
        w.log_snapshot(1, "conv1", "a", torch.randn(1, 64, 128, 128))
        w.commit(1)
        w.flush()
        total, pictures = w.background_cpu_split
        costs = w.picture_costs()
        assert len(costs) == 1 and costs[0][1] == 1 and costs[0][0] > 0
        assert 0 < pictures <= total and pictures == pytest.approx(costs[0][0])
        assert w.picture_costs() == []  # drained
        w.log_scalars(2, {"loss": 0.5})
        w.commit(2)
        w.flush()
        assert w.background_cpu_split[1] == pictures and w.picture_costs() == []
    finally:
        w.close()
    inline = RunWriter(tmp_path / "inline", background=False)
    try:
        inline.log_snapshot(0, "conv1", "a", torch.randn(1, 4, 8, 8))
        inline.commit(0)
        assert inline.background_cpu_split == (0.0, 0.0) and inline.picture_costs() == []
    finally:
        inline.close()
