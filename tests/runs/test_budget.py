"""The byte budget (issue 8 section 4): a long run stays within its budget with every scalar and
every layer statistic kept exactly; the big tensors' snapshots are thinned first (the small ones
keep every step), the newest and the first step of a thinned series stay, what was dropped is
said in RunReader.storage(); the budget comes from Retention, the run's config or the stored run."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
import torch

from convscope.runs import Retention, RunReader, RunWriter
from convscope.runs.pruning import row_bytes
from convscope.runs.retention import share_cuts

BUDGET = 3 * 2**20  # bytes
STEPS = 600


def weight_of(step: int) -> torch.Tensor:
    """(32, 16, 3, 3) filters, different every step, every value a float16 number (exact back)."""
    g = torch.Generator().manual_seed(step)
    return torch.randint(-512, 512, (32, 16, 3, 3), generator=g).float() / 64  # ~9 KB compressed


def map_of(step: int) -> torch.Tensor:
    return torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) + step  # (1, 1, 4, 4)


def pages_in_use(db: Path) -> int:
    """The oracle of storage()["bytes"]: run.sqlite's pages in use, read with plain sqlite3."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        q = [conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")]
    finally:
        conn.close()
    return int((q[0] - q[1]) * q[2])


def test_share_cuts_exact() -> None:
    # one big series: cut to the level that frees 1 MB (3 MB of 4 MB: 30 of 40 snapshots)
    assert share_cuts({"w": (40, 4_000_000), "a": (40, 400_000)}, 1_000_000) == {"w": 30}
    # two equal big ones share the cut; the small one (below the level 700) keeps everything
    assert share_cuts({"w1": (10, 1000), "w2": (10, 1000), "a": (10, 100)}, 600) == {"w1": 7, "w2": 7}
    # more asked than there is: one snapshot per series (the newest), never none
    assert share_cuts({"w": (10, 1000), "a": (4, 100)}, 5000) == {"w": 1, "a": 1}
    assert share_cuts({"w": (1, 10_000)}, 5000) == {}  # a single snapshot is never cut
    assert share_cuts({"w": (3, 30)}, 0) == {}  # nothing to free


def test_select_n_keeps_the_newest_and_the_first() -> None:
    r = Retention(keep_recent=4, max_snapshots_per_series=10, budget_bytes=2**20)
    assert r.select_n(range(11), 1) == [10]
    assert r.select_n(range(11), 2) == [0, 10]
    # newest 4 kept; 4 older at log-spaced ages 99, 34, 12, 4 back from step 99
    assert r.select_n(range(100), 8) == [0, 65, 87, 95, 96, 97, 98, 99]
    with pytest.raises(ValueError, match="keeps at least 1 snapshot"):
        r.select_n(range(3), 0)


@pytest.mark.parametrize("size", [100, 3000, 9000, 20_000, 40_000])
def test_row_bytes_matches_what_sqlite_uses(tmp_path: Path, size: int) -> None:
    """The estimate behind budget thinning against SQLite itself: 200 snapshot rows of `size`
    bytes appended to a run's table, pages in use measured before and after."""
    RunWriter(tmp_path / "run").close()
    db = tmp_path / "run" / "run.sqlite"
    before = pages_in_use(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO snapshots (layer, kind, step, dtype, shape, scale_exp, data) "
            "VALUES ('conv1', 'weight', ?, 'float16', '[32, 16, 3, 3]', 0, ?)",
            [(i, random.Random(i).randbytes(size)) for i in range(200)],
        )
    conn.close()
    measured = (pages_in_use(db) - before) / 200
    assert 0.95 <= row_bytes(size) / measured <= 1.4  # never much under: the budget holds


def test_a_long_run_stays_within_its_budget_with_every_scalar_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    retention = Retention(keep_recent=200, max_snapshots_per_series=1000, budget_bytes=BUDGET)
    w = RunWriter(run, retention=retention)  # (a cap above STEPS: only the budget thins here)
    r = RunReader(run)
    peak = 0
    for step in range(STEPS):
        w.log_scalars(step, {"loss": 1.0 / (step + 1), "examples": float(32 * step)})
        w.log_layer_stats(step, "conv1", {"a_mean": step / 8, "dead_fraction": 0.25})
        w.log_snapshot(step, "conv1", "weight", weight_of(step))  # the big series
        w.log_snapshot(step, "conv1", "a", map_of(step))  # a small one
        w.commit(step)
        if step % 50 == 0:  # within the budget all along, not only at the end
            size = r.storage()
            peak = max(peak, size["bytes"])
            assert size["bytes"] == pages_in_use(run / "run.sqlite") <= BUDGET
            # the WAL beside it is checkpointed every budget/16 bytes: it holds about the last
            # transaction (<= 50 steps here, and the pages thinning freed)
            assert (run / "run.sqlite-wal").stat().st_size <= BUDGET
    w.close()
    assert (run / "run.sqlite").stat().st_size <= BUDGET  # the file itself, not only its pages
    assert peak > BUDGET // 2  # the budget was really reached
    # every scalar and every statistic, exactly
    assert r.scalars() == {
        "loss": [(s, 1.0 / (s + 1)) for s in range(STEPS)],
        "examples": [(s, float(32 * s)) for s in range(STEPS)],
    }
    assert r.layer_stats() == [
        {"step": s, "layer": "conv1", "a_mean": s / 8, "dead_fraction": 0.25} for s in range(STEPS)
    ]
    # the big tensors were thinned, the small series kept whole
    kept = r.snapshot_steps("conv1", "weight")
    assert 20 < len(kept) < STEPS // 2 and kept[0] == 0 and kept[-1] == STEPS - 1
    assert r.snapshot_steps("conv1", "a") == list(range(STEPS))
    for s in (kept[0], kept[len(kept) // 2], kept[-1]):  # what is kept is exact
        got = r.snapshot("conv1", "weight", s)
        assert got is not None and got[0] == s and torch.equal(got[1], weight_of(s))
    assert torch.equal(r.snapshot("conv1", "a", 123)[1], map_of(123))  # type: ignore[index]
    size = r.storage()
    assert size["budget_bytes"] == BUDGET and size["over_budget"] is False
    assert size["thinned"] == [
        {"layer": "conv1", "kind": "weight", "dropped": STEPS - len(kept), "by_retention": 0,
         "by_budget": STEPS - len(kept)},
    ]  # fmt: skip
    assert r.meta()["budget_bytes"] == BUDGET
    r.close()


def test_over_budget_keeps_the_newest_snapshot_and_says_so(tmp_path: Path) -> None:
    """A single step's snapshots bigger than the budget: the newest of each series stays (the page
    needs it), the scalars stay, and storage() says the run is over its budget."""
    g = torch.Generator().manual_seed(0)
    big = [torch.randn(300_000, generator=g) * 1e5 for _ in range(2)]  # float32: ~1.2 MB each
    w = RunWriter(tmp_path / "run", retention=Retention(budget_bytes=2**20), background=False)
    for step in range(4):
        w.log_scalars(step, {"loss": float(step)})
        w.log_snapshot(step, "fc", "weight", big[step % 2])
        w.commit(step)
    w.close()
    with RunReader(tmp_path / "run") as r:
        assert r.snapshot_steps("fc", "weight") == [3]
        assert torch.equal(r.snapshot("fc", "weight")[1], big[1])  # type: ignore[index]
        assert r.scalars() == {"loss": [(s, float(s)) for s in range(4)]}
        size = r.storage()
        assert size["over_budget"] is True and size["bytes"] > 2**20
        assert size["thinned"] == [
            {"layer": "fc", "kind": "weight", "dropped": 3, "by_retention": 0, "by_budget": 3}
        ]


def test_the_budget_from_config_and_from_the_stored_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunWriter(run, config={"lr": 0.1, "run_budget_bytes": 5 * 2**20}).close()
    with RunReader(run) as r:
        assert r.meta()["budget_bytes"] == 5 * 2**20 and r.storage()["budget_bytes"] == 5 * 2**20
    w = RunWriter(run, resume=True)  # resumed without a budget: the run keeps its own
    assert w.retention.budget_bytes == 5 * 2**20
    w.close()
    w = RunWriter(run, resume=True, retention=Retention(budget_bytes=2**21))  # an explicit one wins
    assert w.retention.budget_bytes == 2**21
    w.close()
    assert RunWriter(tmp_path / "default").retention.budget_bytes == 10**9
    with pytest.raises(ValueError, match=r"budget_bytes must be >= 1048576 \(1 MiB\), got 1000"):
        RunWriter(tmp_path / "bad", config={"run_budget_bytes": 1000})
    with pytest.raises(TypeError, match=r"config\['run_budget_bytes'\] must be an int number of bytes"):
        RunWriter(tmp_path / "bad", config={"run_budget_bytes": "1GB"})
    assert not (tmp_path / "bad").exists()  # checked before anything touched the disk
    with pytest.raises(ValueError, match="meta key 'budget_bytes' is set by the run store"):
        RunWriter(tmp_path / "bad", meta={"budget_bytes": 1})
