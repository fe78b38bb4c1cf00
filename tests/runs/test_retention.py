"""Retention: exact kept steps of the thinning rule, and a bounded series after 2000 steps."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from convscope.runs import Retention, RunReader, RunWriter, thin_steps


def test_thin_steps_exact() -> None:
    # steps 0..10, newest 10; recent 7..10 kept; 5 older ones at log-spaced ages
    # targets ln(10) .. ln(4) in 5 even steps -> ages 10, 8, 6, 5, 4 -> steps 0, 2, 4, 5, 6
    assert thin_steps(range(11), keep_recent=4, limit=9) == [0, 2, 4, 5, 6, 7, 8, 9, 10]
    # a thinned history: older ages 30..210, targets ln 30, (ln 30 + ln 210)/2 (nearest: age 50), ln 210
    steps = [0, 10, 20, 40, 80, 160, 170, 180, 190, 200, 210]
    assert thin_steps(steps, keep_recent=3, limit=6) == [0, 160, 180, 190, 200, 210]
    assert thin_steps(range(10), keep_recent=3, limit=4) == [0, 7, 8, 9]  # budget 1: the oldest
    assert thin_steps(range(10), keep_recent=3, limit=3) == [7, 8, 9]
    assert thin_steps([5, 1, 3, 3], keep_recent=2, limit=5) == [1, 3, 5]  # under the limit: all


def test_retention_select_and_thin_to() -> None:
    r = Retention(keep_recent=4, max_snapshots_per_series=10)
    assert r.thin_to == 9  # the cap minus max(1, (10 - 4) // 4)
    assert r.select(range(10)) == list(range(10))  # at the cap: untouched
    assert r.select(range(11)) == [0, 2, 4, 5, 6, 7, 8, 9, 10]
    assert Retention().thin_to == 350
    assert Retention(keep_recent=5, max_snapshots_per_series=5).select(range(8)) == [3, 4, 5, 6, 7]


def test_retention_bad_settings() -> None:
    with pytest.raises(ValueError, match="keep_recent must be in"):
        Retention(keep_recent=500, max_snapshots_per_series=400)
    with pytest.raises(ValueError, match="max_snapshots_per_series must be >= 1"):
        Retention(keep_recent=0, max_snapshots_per_series=0)
    with pytest.raises(TypeError, match="keep_recent must be an int"):
        Retention(keep_recent=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="need 0 <= keep_recent <= limit"):
        thin_steps([1, 2], keep_recent=3, limit=2)


def test_2000_snapshot_steps_stay_bounded(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run", retention=Retention())  # keep_recent=200, max 400 per series
    r = RunReader(tmp_path / "run")
    for step in range(2000):
        w.log_snapshot(step, "conv1", "a", torch.full((2,), float(step)))
        if step % 3 == 0:  # a second, sparser series is thinned on its own schedule
            w.log_snapshot(step, "conv1", "z", torch.full((1,), float(step)))
        w.commit(step)
        if step % 97 == 0:  # bounded after every commit, not just at the end
            assert len(r.snapshot_steps("conv1", "a")) <= 400
    w.close()
    kept = r.snapshot_steps("conv1", "a")
    assert len(kept) <= 400
    assert kept[-200:] == list(range(1800, 2000))  # the newest keep_recent, all present
    assert kept[0] == 0  # the starting point survives every thinning
    older = kept[:-200]
    assert len(older) >= 100  # the budget is used, not just the endpoints
    gaps = [b - a for a, b in itertools.pairwise(older)]
    assert sum(gaps[: len(gaps) // 2]) > 2 * sum(gaps[len(gaps) // 2 :])  # sparser further back
    z = r.snapshot_steps("conv1", "z")
    assert len(z) <= 400 and z[0] == 0
    assert z[-200:] == list(range(1401, 1999, 3))
    # (which older steps survive depends on how the writer thread batched the commits)
    for s in (0, older[len(older) // 2], 1999):  # the kept rows still hold their own values
        got = r.snapshot("conv1", "a", s)
        assert got is not None and got[0] == s and got[1].tolist() == [float(s)] * 2
    r.close()
