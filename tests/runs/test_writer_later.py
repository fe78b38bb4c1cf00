"""`RunWriter.log_scalars_later` (issue 10: a recorder's steps that coast log their scalars with an
append): the rows are those `log_scalars` would write, in the order of the calls, taken by the
writer's next call from any thread, committed, checked and dropped as `log_scalars`' are; and a
`watch()` run whose steps coast shows every step up to the committed one, as it did before."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

import convscope as cs
from convscope.capture.hooks import count_hooks
from convscope.runs import RunReader, RunWriter


def _losses(run: Path) -> list[tuple[int, float]]:
    with RunReader(run) as r:
        return [(s, v) for s, v in r.scalars().get("loss", [])]


def test_the_rows_are_those_log_scalars_writes(tmp_path: Path) -> None:
    for later in (False, True):
        with RunWriter(tmp_path / str(later)) as w:
            for step in range(6):
                values = {"loss": 1.0 / (step + 1), "lr": 0.1}
                (w.log_scalars_later if later else w.log_scalars)(step, values)
                if step % 3 == 2:
                    w.commit(step)
    with RunReader(tmp_path / "False") as a, RunReader(tmp_path / "True") as b:
        assert a.scalars() == b.scalars()
        assert a.scalars()["loss"] == [(s, 1.0 / (s + 1)) for s in range(6)]
        assert a.last_step() == b.last_step() == 5


def test_they_keep_the_order_of_the_calls(tmp_path: Path) -> None:
    """The same (name, step) logged twice: the later call wins, whichever way each was logged."""
    with RunWriter(tmp_path / "run") as w:
        w.log_scalars_later(5, {"loss": 1.0})
        w.log_scalars(5, {"loss": 2.0})  # taken first: 2.0 replaces 1.0
        w.log_scalars(6, {"loss": 3.0})
        w.log_scalars_later(6, {"loss": 4.0})  # after: 4.0 replaces 3.0
        w.commit(6)
    assert _losses(tmp_path / "run") == [(5, 2.0), (6, 4.0)]


def test_a_commit_below_them_is_refused_as_for_log_scalars(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "a") as a, RunWriter(tmp_path / "b") as b:
        a.log_scalars(7, {"loss": 1.0})
        b.log_scalars_later(7, {"loss": 1.0})
        errors = []
        for w in (a, b):
            with pytest.raises(ValueError, match=r"commit\(6\) but data was logged for step 7") as e:
                w.commit(6)
            errors.append(str(e.value))
        assert errors[0] == errors[1]
        b.commit(7)  # nothing was lost by the refusal
        b.log_scalars_later(3, {"loss": 0.5})  # below the committed step: refused at the next call,
        b.log_scalars_later(8, {"loss": 0.25})  # and only that row: the others are taken
        with pytest.raises(ValueError, match="step 3 is before the last committed step 7"):
            b.log_json(8, "other", 1)
        b.commit(8)
    assert _losses(tmp_path / "b") == [(7, 1.0), (8, 0.25)]


def test_a_row_refused_at_close_leaves_the_run_closed_and_whole(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    w.log_scalars(7, {"loss": 1.0})
    w.commit(7)
    w.log_scalars(8, {"loss": 0.5})
    w.log_scalars_later(3, {"loss": 9.0})  # below the committed step
    with pytest.raises(ValueError, match="step 3 is before the last committed step 7"):
        w.close("finished")
    with RunReader(tmp_path / "run") as r:
        assert r.meta()["status"] == "finished" and r.last_step() == 8
    assert _losses(tmp_path / "run") == [(7, 1.0), (8, 0.5)]
    w.close("finished")  # (idempotent: closed)


@pytest.mark.parametrize(("status", "kept"), [("finished", [(0, 1.0), (1, 0.5)]), ("stopped", [(0, 1.0)])])
def test_close_commits_them_or_drops_them_as_logged_rows(tmp_path: Path, status: str, kept: list[tuple[int, float]]) -> None:
    w = RunWriter(tmp_path / "run")
    w.log_scalars_later(0, {"loss": 1.0})
    w.commit(0)
    w.log_scalars_later(1, {"loss": 0.5})  # logged, never committed
    w.close(status)
    with pytest.raises(RuntimeError, match="is closed"):
        w.log_scalars_later(2, {"loss": 0.25})  # as log_scalars: refused, not dropped unsaid
    assert _losses(tmp_path / "run") == kept


def test_another_thread_takes_them_in_order(tmp_path: Path) -> None:
    """Appended in one thread while another logs and commits (each call takes what was appended so
    far): every row arrives, in order, and the commits in between see every row below them."""
    with RunWriter(tmp_path / "run") as w:
        done = threading.Event()
        taken_meanwhile = []

        def append() -> None:
            for step in range(2000):
                w.log_scalars_later(step, {"loss": float(step)})
                if step % 50 == 49:
                    time.sleep(0)  # (let the other thread run: the GIL would else keep this one going)
            done.set()

        t = threading.Thread(target=append)
        t.start()
        while not done.is_set():
            w.log_json(0, "other", {"n": 1})
            taken_meanwhile.append(w._pending.max_step)  # how far this thread took them
            time.sleep(0)
        t.join()
        w.commit(1999)
    assert len({s for s in taken_meanwhile if s is not None}) > 1  # taken part-way, more than once
    assert _losses(tmp_path / "run") == [(s, float(s)) for s in range(2000)]


def test_a_checkpoint_counts_their_steps(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "run") as w:
        w.log_scalars_later(12, {"loss": 1.0})
        path = w.save_checkpoint({"w": torch.zeros(2)}, "c")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["step"] == "12"


def test_a_watched_run_that_coasts_shows_every_step_up_to_the_committed_one(tmp_path: Path) -> None:
    """watch() with steps that coast (the budget says plain, five steps ahead) and a clock that
    makes a commit due every third step: after each step, the committed step's scalars and every
    earlier step's are in run.sqlite, as when each step logged its own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # (the weights stay as they were)
    x, y = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    clock = [0.0]
    coasted: list[int] = []
    with cs.watch(model, tmp_path / "run") as run:
        run._clock = lambda: clock[0]
        run.budget.plan = lambda step, now, step_s=0.0: "plain"  # type: ignore[method-assign]
        run.budget.plain_ahead = lambda now, step_s: 5  # type: ignore[method-assign]
        coast = run._coast
        run._coast = lambda step, *a: coasted.append(step) or coast(step, *a)  # type: ignore[method-assign]
        db = sqlite3.connect(f"{(tmp_path / 'run' / 'run.sqlite').as_uri()}?mode=ro", uri=True)
        for i in range(30):
            clock[0] += 0.1  # a commit due every third step (commit_every 0.25 s)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss, lr=0.0)
            run.writer.flush()
            (committed,) = db.execute("SELECT value FROM meta WHERE key = 'last_step'").fetchone()
            if committed == "null":
                continue
            steps = [s for (s,) in db.execute("SELECT step FROM scalars WHERE name = 'loss' ORDER BY step")]
            assert steps == list(range(int(committed) + 1)), i
        db.close()
    assert len(coasted) >= 10  # most steps coasted
    assert [s for s, _ in _losses(tmp_path / "run")] == list(range(30))
    assert count_hooks(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_empty_metric_name_is_refused_at_the_step_that_coasts(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    with cs.watch(model, tmp_path / "run") as run:
        run.budget.plan = lambda step, now, step_s=0.0: "plain"  # type: ignore[method-assign]
        run.budget.plain_ahead = lambda now, step_s: 5  # type: ignore[method-assign]
        run.step(loss=1.0)  # a full step: the next ones coast
        run.step(loss=1.0)
        assert run._coast_left > 0
        with pytest.raises(ValueError, match="scalar name must be a non-empty string"):
            run.step(loss=1.0, **{"": 2.0})
    assert [s for s, _ in _losses(tmp_path / "run")] == [0, 1]
