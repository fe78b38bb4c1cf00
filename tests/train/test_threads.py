"""The trainer's thread count (train/threads.py): from the cores free, one left to the server."""

from __future__ import annotations

import os

import pytest
import torch

from convscope.train import threads
from convscope.train.threads import choose_threads, pick_threads


@pytest.mark.parametrize(
    ("cores", "load", "own", "expected"),
    [
        (2, 0.0, 0.0, 1),  # an idle 2-core machine: one for training, one for the server
        (2, 1.0, 0.0, 1),  # the case: one core busy elsewhere -> never 2 threads
        (1, 0.0, 0.0, 1),  # at least one
        (8, 0.0, 0.0, 7),
        (8, 2.6, 0.0, 4),  # 2.6 cores busy: 5 free (a core less than half busy counts), 4 + server
        (8, 2.4, 0.0, 5),
        (8, 4.0, 3.0, 6),  # 3 of the load is this trainer's own: others keep 1 core busy
        (4, 9.0, 0.0, 1),  # overloaded
        (16, 0.49, 0.0, 15),
    ],
)
def test_pick_threads_exact(cores: int, load: float, own: float, expected: int) -> None:
    assert pick_threads(cores, load, own=own) == expected


def test_pick_threads_without_a_server_share_and_bad_cores() -> None:
    assert pick_threads(8, 0.0, reserve=0) == 8
    with pytest.raises(ValueError, match="cores must be >= 1, got 0"):
        pick_threads(0, 0.0)


def test_choose_threads_explicit_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "load_average", lambda: 1.2)
    assert choose_threads(0) == 2  # 4 cores, ~1 busy: 3 free, 1 left to the server
    assert choose_threads(3) == 3  # TrainConfig.threads
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads(0) is None  # torch already honours the environment


def test_usable_cores_reads_the_affinity_mask() -> None:
    assert threads.usable_cores() == len(os.sched_getaffinity(0)) >= 1
    assert torch.get_num_threads() >= 1
