"""The recorder's two CPU clocks (train/watch.py `_own_cpu`): the loop's time, from step() to
step(), is the process's (every thread of the training: torch's intra-op threads too), its own
time in step() its thread's. Linux folds another running thread's CPU into the process's clock at
the scheduler's tick or when that thread sleeps, so read on the process's clock step() was charged
work of the loop's other threads (docs/speed.md, "Two clocks"). Here another thread works 50 ms of
its own CPU while step() waits for it: none of it is step()'s own time; work of another thread in
the loop is the loop's. CPU seconds, not wall time: the bound holds on a loaded machine too."""

from __future__ import annotations

import gc
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from train.test_recorder_budget import _net

from convscope.capture import count_hooks
from convscope.train import collect, watch
from convscope.train.watch import Recorder

WORK_S = 0.05  # CPU seconds the other thread works


def _work() -> None:
    """Work WORK_S of this thread's own CPU (whatever the wall time it takes)."""
    end = time.thread_time() + WORK_S
    x = 0
    while time.thread_time() < end:
        x += 1


def _other_thread_works() -> None:
    t = threading.Thread(target=_work)
    t.start()
    t.join()  # (this thread waits: no CPU)


@pytest.mark.parametrize("clocks", ["watch", "given"])
def test_another_threads_cpu_is_the_loops_not_the_recorders(tmp_path: Path, clocks: str) -> None:
    """`clocks="given"`: both clocks passed, as bench/watch.py does (its process clock leaves out
    the unwatched samples): the thread clock is still the one step()'s own time is read on."""
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[str, float | None, float]] = []
    if clocks == "given":
        run = Recorder(model, tmp_path / "run", budget=None, snapshot_every=1e9,
                       cpu_clock=time.process_time, thread_clock=time.thread_time)  # fmt: skip
    else:
        run = watch(model, tmp_path / "run", budget=None, snapshot_every=1e9)  # (no clocks given)
    with run:
        observe = run.budget.observe

        def seen_observe(kind: str, loop_s: float | None, own_s: float, *rest: float, **kw: bool) -> None:
            seen.append((kind, loop_s, own_s))
            observe(kind, loop_s, own_s, *rest, **kw)

        run.budget.observe = seen_observe  # type: ignore[method-assign]
        own_before = run._own_cpu()
        _other_thread_works()
        assert run._own_cpu() - own_before < WORK_S / 2  # the recorder's clock: this thread's only
        x = torch.randn(4, 1, 4, 4)
        for _ in range(3):
            with torch.no_grad():
                model(x)
            _other_thread_works()  # in the loop: the loop's time
            run.step(loss=1.0)
        log_stats = run._log_stats

        def stats_while_another_thread_works(*args: object) -> None:
            _other_thread_works()  # in step(), but not the recorder's work
            log_stats(*args)

        run._log_stats = stats_while_another_thread_works  # type: ignore[method-assign]
        model(x).sum().backward()  # a pass the probe captures: statistics in the next step()
        run.step(loss=1.0)
    assert count_hooks(model) == 0 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    loops = [loop for _, loop, _ in seen[1:3]]
    assert all(loop is not None and loop >= WORK_S * 0.9 for loop in loops), loops  # the process's clock saw it
    assert all(own < WORK_S / 2 for _, _, own in seen), seen  # never step()'s own time


def test_one_cpu_clock_given_drives_both(tmp_path: Path) -> None:
    """A `cpu_clock` given alone (a made-up clock) is also the thread's clock."""
    ticks = iter(range(1000))

    def made_up() -> float:
        return float(next(ticks))

    model = _net()
    with Recorder(model, tmp_path / "run", budget=None, cpu_clock=made_up) as run:
        assert run._own_cpu() + 1 == run._own_cpu() == run._cpu() - 1  # one clock, read in turn
    assert count_hooks(model) == 0


def test_the_full_collection_the_imports_leave_due_comes_before_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorder's set-up imports ~800 modules; the full pass of Python's collector they leave due
    (~0.12 s) comes in watch(), not in a step of the loop: one `gc.collect()` where sys.modules
    changed since the last, none where not (a second recorder), one again after a new import. The
    model is unchanged and no hook is left."""
    calls: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation) or 0)
    monkeypatch.setattr(collect, "_modules_collected", 0)
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, wanted in (("a", [2]), ("b", [2]), ("c", [2, 2])):
        if name == "c":
            monkeypatch.setitem(sys.modules, "convscope_test_imported_later", types.ModuleType("later"))
        with watch(model, tmp_path / name):
            assert calls == wanted and collect._modules_collected == len(sys.modules)
        assert count_hooks(model) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
