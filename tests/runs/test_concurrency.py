"""One writer, many readers: a reader polling from another thread or another process never sees
half a step; controls cross over while the writer commits; `kill -9` of the writer loses only the
steps its writer thread had not written yet (never one it reported written) and leaves a database
that opens, passes integrity_check and resumes."""

from __future__ import annotations

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

LAYERS = ("conv1", "conv2")
KINDS = ("a", "z")


def write_step(w: RunWriter, step: int) -> None:
    """One step as the check below expects it: every value equals the step number."""
    w.log_scalars(step, {"loss": float(step)})
    for layer in LAYERS:
        w.log_layer_stats(step, layer, {"a_mean": float(step)})
        for kind in KINDS:
            w.log_snapshot(step, layer, kind, torch.full((1, 4, 8, 8), float(step)))
    w.log_json(step, "tick", step)


def check_complete(r: RunReader) -> int | None:
    """Read in the order that would expose a half-written step (last_step, then scalars, then
    the rest): every step with a scalar has all its layer stats, snapshots and json. Returns
    last_step as read first."""
    last = r.last_step()
    loss = r.scalars(["loss"])["loss"]
    steps = [s for s, _ in loss]
    assert steps == list(range(len(steps))) and all(v == float(s) for s, v in loss)
    assert last is None or len(steps) - 1 >= last
    by_step: dict[int, dict[str, float]] = {}
    for row in r.layer_stats():
        by_step.setdefault(row["step"], {})[row["layer"]] = row["a_mean"]
    for s in steps:
        assert by_step.get(s) == {layer: float(s) for layer in LAYERS}, f"step {s}: half a step"
    for layer in LAYERS:
        for kind in KINDS:
            assert set(steps) <= set(r.snapshot_steps(layer, kind)), (
                f"step {steps}: snapshot missing"
            )
    if steps:
        tick = r.json("tick")
        assert tick is not None and tick[0] >= steps[-1] and tick[1] == tick[0]
        got = r.snapshot(LAYERS[-1], KINDS[-1], steps[-1])
        assert got is not None and got[0] == steps[-1]
        assert torch.equal(got[1], torch.full((1, 4, 8, 8), float(steps[-1])))
    return last


def test_the_check_catches_a_half_step(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    r = RunReader(tmp_path / "run")
    w.log_scalars(0, {"loss": 0.0})
    w.commit(0)  # scalars of step 0 committed without the rest: what the store must never show
    with pytest.raises(AssertionError, match="half a step"):
        check_complete(r)
    write_step(w, 0)
    w.commit(0)
    assert check_complete(r) == 0
    w.close()
    r.close()


def test_reader_thread_never_sees_half_a_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    w = RunWriter(run)
    r = RunReader(run)
    steps, sent = 120, 20
    errors: list[BaseException] = []

    def train() -> None:
        try:
            for step in range(steps):
                write_step(w, step)
                w.commit(step)  # returns at once (the writer thread writes it)
                time.sleep(0.005)  # the training step: the reader gets to poll meanwhile
                for c in w.poll_controls():
                    w.ack_control(c.id, step, result={"ok": True, "echo": c.value})
        except BaseException as exc:  # handed to the main thread's assert
            errors.append(exc)

    def dashboard() -> None:
        try:
            for i in range(sent):
                r.send_control("lr", i / 10)  # a write from the serving side, mid-training
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=train), threading.Thread(target=dashboard)]
    for t in threads:
        t.start()
    checks = 0
    while threads[0].is_alive():
        check_complete(r)
        checks += 1
    for t in threads:
        t.join()
    assert not errors, errors
    assert checks >= 3  # the reader really polled while the writer wrote
    assert check_complete(r) == steps - 1
    for c in w.poll_controls():  # the last few may have arrived after the writer's last poll
        w.ack_control(c.id, steps - 1, result={"ok": True, "echo": c.value})
    ctrls = r.controls()
    assert [c["value"] for c in ctrls] == [i / 10 for i in range(sent)]
    assert [c["result"] for c in ctrls] == [{"ok": True, "echo": i / 10} for i in range(sent)]
    w.close()
    r.close()


CHILD = """
import sys, torch
from convscope.runs import Retention, RunWriter
sys.path.insert(0, sys.argv[2])
from test_concurrency import write_step
w = RunWriter(sys.argv[1], meta={"model": "child"}, retention=Retention(keep_recent=10**6, max_snapshots_per_series=10**6))
noise = torch.randn(1, 16, 32, 32)
step = 0
while True:
    write_step(w, step)
    w.log_snapshot(step, "conv1", "noise", noise * step)  # a heavier transaction to be killed in
    for c in w.poll_controls():
        w.ack_control(c.id, step, result={"ok": True, "echo": c.value})
    w.commit(step)
    print(step, w.written_step if w.written_step is not None else -1, flush=True)
    step += 1
"""


def test_kill_9_loses_only_unwritten_steps(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180  # the child imports torch: slow on a loaded machine
        while not (run / "run.sqlite").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the child never created its run"
            time.sleep(0.05)
        r = RunReader(run)  # a second process reading while the child writes
        r.send_control("lr", 0.5)
        checks = 0
        while True:
            last = check_complete(r)
            checks += 1
            acked = r.controls()[0]["result"] is not None
            if acked and checks >= 5 and last is not None and last >= 30:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the child did not get far enough"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: most likely mid-step or mid-commit
        proc.wait(timeout=30)
        r.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    out = proc.stdout.read()
    # the kill can land inside a print: its part of a line is no report (a fresh-clone CI run got
    # one token there); every line before it is whole
    lines = [tuple(int(n) for n in line.split()) for line in out[: out.rfind("\n") + 1].splitlines()]
    printed, written = [c for c, _ in lines], [w for _, w in lines]

    with sqlite3.connect(f"{(run / 'run.sqlite').as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    r = RunReader(run)
    last = r.last_step()
    # every step the writer thread had reported written survived; nothing past the last commit
    assert last is not None and written[-1] <= last <= printed[-1] + 1  # (+1: killed before print)
    assert any(w < c for c, w in lines)  # the writer thread really was behind at times
    assert check_complete(r) == last
    assert max(s for s, _ in r.scalars(["loss"])["loss"]) == last  # nothing of the open step
    assert max(row["step"] for row in r.layer_stats()) == last
    assert r.snapshot_steps("conv1", "noise")[-1] == last and r.json("tick") == (last, last)
    assert r.meta()["status"] == "running"  # nobody closed it; the heartbeat tells
    assert r.controls()[0]["result"] == {"ok": True, "echo": 0.5}
    time.sleep(0.05)
    assert r.is_stale(0.01)
    w = RunWriter(run, resume=True)  # the dead writer's lock went with it
    assert w.last_step == last
    write_step(w, last + 1)
    w.commit(last + 1)
    w.close("stopped")
    assert check_complete(r) == last + 1 and r.meta()["status"] == "stopped"
    r.close()
