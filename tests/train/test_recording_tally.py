"""The one sentence the page shows about what the recorder kept and skipped (train/recording_tally.py
describe), worked by hand for each case; and the seconds each json "recording" row's window covers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from convscope.capture.hooks import count_hooks
from convscope.runs import RunReader, RunWriter
from convscope.train.recording_tally import Tally, describe
from convscope.train.watch import Recorder


def test_the_sentence_for_each_case() -> None:
    assert describe(0.03, Tally()) == "no steps recorded yet"
    within = Tally(steps=10, stats_steps=10, weight_steps=10, snapshots=1, train_s=2.0, cost_s=0.05)
    assert describe(0.03, within) == "per-layer statistics on 10 of 10 steps; 1 snapshot, all within the budget (measured: 2.5%)"
    skipped = Tally(steps=40, stats_steps=30, stats_skipped=10, weight_steps=4, snapshots=2, snapshots_late=3,
                    diagnosis_skipped=1, train_s=4.0, cost_s=0.1)  # fmt: skip
    assert describe(0.03, skipped) == (
        "per-layer statistics on 30 of 40 steps (‖W‖, ‖dL/dW‖ and the update ratio on 4 of them); 2 snapshots; "
        "1 live-diagnosis sample skipped; snapshots waited 3 steps for the budget, to keep recording within 3% "
        "of the step time (measured: 2.5%)"
    )
    short = Tally(steps=12, stats_steps=4, stats_skipped=8, weight_steps=4, snapshots=1, train_s=0.01, cost_s=0.02)
    assert describe(0.03, short) == (
        "per-layer statistics on 4 of 12 steps; 1 snapshot, to keep recording within 3% of the step time "
        "(measured: 200.0%, over the budget: what is never skipped (the scalars, the first snapshot) costs more on "
        "steps this short)"
    )
    assert describe(0.03, Tally(steps=3, stats_steps=3, weight_steps=3, train_s=1.0, cost_s=0.044)).endswith(
        "all within the budget (measured: 4.4%)"
    )  # (under 1.5 × the budget: the usual overshoot of one step, not said)
    assert describe(None, Tally(steps=2, stats_steps=2, weight_steps=2, train_s=1.0, cost_s=0.5)) == (
        "per-layer statistics on 2 of 2 steps (no budget: everything on schedule; recording cost 50.0% of the step time)"
    )


def test_each_row_says_how_long_its_window_was(tmp_path: Path) -> None:
    """A recorder on a clock that moves 0.5 s a step: a row every 2 s (REPORT_EVERY), each with the
    seconds since the last one (the first: since the recorder started), and one at close."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clock = [100.0]  # the recorder starts at 100 s on this clock
    rows = []

    class Writer(RunWriter):
        def log_json(self, step: int, key: str, value: Any) -> None:
            if key == "recording":
                rows.append((step, value["window_s"]))
            super().log_json(step, key, value)

    with Recorder(model, tmp_path / "run", commit_every=0.0, clock=lambda: clock[0]) as run:
        run.writer.__class__ = Writer  # (the rows it writes, seen as they are logged)
        for _ in range(9):
            clock[0] += 0.5
            with torch.no_grad():
                run.step(loss=float(model(torch.ones(2, 4)).sum()))
        clock[0] += 0.25
    assert rows == [(0, 0.5), (4, 2.0), (8, 2.0), (8, 0.25)]  # (the first step reports at once)
    with RunReader(tmp_path / "run") as r:
        step, last = r.json("recording")  # type: ignore[misc]
    assert step == 8 and last["window_s"] == 0.25
    assert count_hooks(model) == 0 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
