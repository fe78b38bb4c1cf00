"""The trainer's thread count (train/threads.py): from the cores free, one kept for the server
while a page watches the run (runs/watched.py)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import torch

from convscope.config import TrainConfig
from convscope.runs import RunReader
from convscope.runs.watched import FRESH_S, mark_watched
from convscope.train import Trainer, threads
from convscope.train.threads import RECHECK_S as THREADS_RECHECK_S
from convscope.train.threads import (
    SAMPLE_S,
    WATCHED_CHECK_S,
    Look,
    choose_threads,
    core_times,
    free_threads,
    look,
    others_busy,
    pick_threads,
)


@pytest.mark.parametrize(
    ("cores", "others", "expected"),
    [
        (2, 0.0, 1),  # an idle 2-core machine, a page watching: one for training, one for the server
        (2, 1.0, 1),  # the case: one core busy elsewhere -> never 2 threads
        (1, 0.0, 1),  # at least one
        (8, 0.0, 7),
        (8, 0.9, 7),  # the server's own load (up to a core) is within its reserve: not counted twice
        (8, 1.4, 7),
        (8, 1.6, 6),
        (8, 2.6, 5),  # 2.6 cores busy elsewhere (the server among them): 5 free (rounded)
        (8, 2.4, 6),
        (4, 9.0, 1),  # overloaded
        (16, 0.49, 15),
        (4, -1.0, 3),  # (a negative measure is none)
    ],
)
def test_pick_threads_exact(cores: int, others: float, expected: int) -> None:
    assert pick_threads(cores, others) == expected


def test_pick_threads_without_a_server_share_and_bad_cores() -> None:
    assert pick_threads(8, 0.0, reserve=0) == 8
    assert pick_threads(2, 0.0, reserve=0) == 2  # no page: both cores
    assert pick_threads(2, 1.0, reserve=0) == 1  # ... unless one is busy elsewhere
    assert pick_threads(2, 0.4, reserve=0) == 2
    with pytest.raises(ValueError, match="cores must be >= 1, got 0"):
        pick_threads(0, 0.0)


STAT = """cpu  900 0 100 1000 0 0 0 0 0 0
cpu0 300 0 50 600 50 0 0 0 0 0
cpu1 600 10 40 400 0 0 0 0 0 0
cpu12 5 0 0 5 0 0 0 0 0 0

cpu3 1 2
cpu4 a b c d e f
intr 12345 0 0
"""


def test_core_times_sum_the_usable_cores_of_proc_stat() -> None:
    assert core_times(STAT, {0}) == (350.0, 1000.0)  # busy: all but idle (600) and iowait (50)
    assert core_times(STAT, {0, 1}) == (1000.0, 2050.0)
    assert core_times(STAT, {12}) == (5.0, 10.0)  # cpu12, not cpu1 followed by a 2
    assert core_times(STAT, {7}) is None  # not listed
    assert core_times(STAT, {3, 4}) is None  # a short line and an unreadable one are passed over
    assert core_times(STAT, {0, 3, 4}) == (350.0, 1000.0)  # (and a blank line: no error)
    assert core_times("", {0}) is None


TWO = frozenset({0, 1})


def test_others_busy_is_the_cores_busy_less_this_process() -> None:
    a = Look(wall=10.0, own=5.0, cores=(1000.0, 4000.0), cpus=TWO)
    b = Look(wall=12.0, own=7.0, cores=(1300.0, 4400.0), cpus=TWO)  # 300 of 400 ticks busy on 2 cores: 1.5
    assert others_busy(a, b) == pytest.approx(0.5)  # this process: 1 core of it
    c = Look(wall=12.0, own=9.0, cores=(1300.0, 4400.0), cpus=TWO)
    assert others_busy(a, c) == 0.0  # never below 0 (CPU and /proc/stat tick apart)


def test_others_busy_falls_back_on_the_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "load_average", lambda: 2.5)
    a, b = Look(wall=0.0, own=0.0, cores=None), Look(wall=10.0, own=10.0, cores=None)
    assert others_busy(a, b) == 1.5  # the load less this process's one core
    moved = Look(wall=10.0, own=10.0, cores=(1300.0, 4400.0), cpus=frozenset({0, 1, 2}))
    assert others_busy(Look(0.0, 0.0, (1000.0, 4000.0), TWO), moved) == 1.5  # other cores: no share


def test_a_real_look_sees_a_busy_process() -> None:
    a = look()
    if a.cores is None:
        pytest.skip("no /proc/stat here")
    end = time.process_time() + 0.3
    while time.process_time() < end:  # this process keeps one core busy
        pass
    b = look()
    assert b.cores is not None and b.cores[0] - a.cores[0] > 0  # type: ignore[index]
    assert 0.0 <= others_busy(a, b) < len(os.sched_getaffinity(0))


def test_choose_threads_explicit_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert choose_threads(0, others=0.3) == 3  # 4 cores, one kept for the server
    assert choose_threads(0, others=0.3, watched=False) == 4  # no page watches: every free core
    assert choose_threads(0, others=2.2) == choose_threads(0, others=2.2, watched=False) == 2
    assert choose_threads(3) == 3  # TrainConfig.threads
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads(0) is None  # torch already honours the environment


def test_free_threads_for_a_command_take_every_core_others_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    slept: list[float] = []
    monkeypatch.setattr(threads.time, "sleep", slept.append)
    before, after = Look(0.0, 0.0, None), Look(0.1, 0.0, None)
    looks: list[Look] = []
    monkeypatch.setattr(threads, "look", lambda: looks.pop(0))
    for busy, expected in ((0.4, 4), (1.6, 2), (3.7, 1), (9.0, 1)):  # no core kept for a server
        looks[:] = [before, after]
        monkeypatch.setattr(threads, "others_busy", lambda a, b, v=busy: v if (a, b) == (before, after) else -1)
        assert free_threads() == expected
    assert slept == [SAMPLE_S] * 4  # the load is measured over SAMPLE_S
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    assert free_threads() is None  # the environment's count stands
    assert len(slept) == 4


def test_usable_cores_reads_the_affinity_mask_and_the_cpu_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    quota = threads.quota_cores()  # this machine's (None: no quota)
    cpus = len(os.sched_getaffinity(0))
    assert threads.usable_cores() == (cpus if quota is None else min(cpus, max(1, round(quota + 1e-9)))) >= 1
    assert torch.get_num_threads() >= 1
    monkeypatch.setattr(threads, "usable_cpus", lambda: frozenset(range(8)))
    for quota, cores in ((None, 8), (1.5, 2), (1.49, 1), (0.2, 1), (2.0, 2), (16.0, 8)):
        monkeypatch.setattr(threads, "quota_cores", lambda q=quota: q)
        assert threads.usable_cores() == cores, quota
    monkeypatch.setattr(threads, "quota_cores", lambda: 1.0)  # `docker run --cpus=1` on an 8-core host
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert choose_threads(0, others=0.0, watched=False) == 1


def test_the_trainer_leaves_a_core_only_while_a_page_watches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    measured: list[float] = [0.0]  # what others_busy says: an idle 2-core machine
    monkeypatch.setattr(threads, "others_busy", lambda a, b: measured[0])
    before = torch.get_num_threads()
    small = dict(train_size=64, val_size=16, test_images=2, batch_size=8, snapshot_every=0.0)
    trainer = Trainer(TrainConfig(**small), tmp_path / "run")  # type: ignore[arg-type]
    said: list[int] = []
    set_meta = trainer.writer.set_meta

    def spy(key: str, value: object) -> None:
        if key == "threads":
            said.append(value)  # type: ignore[arg-type]
        set_meta(key, value)

    monkeypatch.setattr(trainer.writer, "set_meta", spy)
    try:
        assert (trainer.watched, trainer.threads, torch.get_num_threads()) == (False, 2, 2)
        t = trainer._threads.checked
        mark_watched(tmp_path / "run")  # a page opened the run's live stream
        trainer._recheck_threads(t + WATCHED_CHECK_S / 2)
        assert trainer.threads == 2 and said == []  # not looked at yet
        trainer._threads.checked = -math.inf  # the next step looks (train_step does)
        trainer.train_step()
        assert (trainer.watched, trainer.threads, torch.get_num_threads(), said) == (True, 1, 1, [1])
        measured[0] = 0.6  # the page's server was at work over the window since the last measure
        mark_watched(tmp_path / "run", now=time.time() - FRESH_S - 1)  # the page went away
        trainer._threads.checked = -math.inf
        t = time.monotonic()
        trainer._recheck_threads(t)
        assert (trainer.watched, trainer.threads) == (False, 2)  # at once, from the load last measured (idle)
        measured[0] = 0.0
        trainer._recheck_threads(t + WATCHED_CHECK_S / 2)
        trainer._recheck_threads(t + WATCHED_CHECK_S)  # measured anew a look later: idle
        assert (trainer.threads, said) == (2, [1, 2, 2])
        measured[0] = 0.6  # another process busy more than half a core
        trainer._recheck_threads(t + 2 * WATCHED_CHECK_S)
        assert trainer.threads == 2  # the next measure is THREADS_RECHECK_S after the last
        trainer._recheck_threads(t + WATCHED_CHECK_S + THREADS_RECHECK_S)
        assert (trainer.threads, said[-1]) == (1, 1)
        trainer.recorder.close("finished")
        with RunReader(tmp_path / "run") as r:
            assert r.meta()["threads"] == 1
    finally:
        torch.set_num_threads(before)
