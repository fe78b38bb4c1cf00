"""Coasting: the steps watch()'s recorder runs without planning (train/watch.py's Recorder mixes this
in). After a step's training the recorder's own objects are cold, so each one it touches costs (a
plain step that planned for itself took ~150 µs, ten times its warm cost; ~0.35 ms on stop 40's
host). `Budget.coast_ahead` (train/coast_plan.py) decides how far. `Budget.plain_ahead` says how
many coming steps stay plain even if each earns as much as the richest recent plain step (each pool
getting its part of it), the step that plans after them earning what planning costs beyond coasting
less (`Costs.planning_extra`), and where planning costs more, at least as many as leave the
statistics short at what recent steps brought them; the recorder runs those with only their scalars
logged (`_coast`) and gives them to the budget (`coast`, then `observe`) on the next full step
(`_observe_coasted`). Where planning costs more, and k steps bringing what recent ones did fill the
statistics pool, `Budget.statistics_after` says so instead: the last of those k coasting steps arms
the statistics itself, with no plan between (its arming is charged with the statistics step, as a
plan's is). A commit, report or control poll that falls due makes a step a full one
(`_nothing_due`), which plans as usual. While no loop is longer, and no plain step's own work
cheaper or costlier, than the recent ones, and planning costs no more than coasting, what it records
is what planning every step records (tests/train/test_recorder_budget.py); a longer loop or a
cheaper step can bring statistics a step or so later, never fewer of them; where planning costs
more, statistics can come a step or so later than free plans would bring them (more right after
steps start bringing more), or, armed by a coasting step, a step or so earlier (the pool a little in
debt), and far more often than plans that cost more than a step earns (docs/speed.md).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable

from convscope.runs import RunWriter
from convscope.train.recorder_budget import MAPS, PLAIN, STATS, Budget

REPORT_EVERY = 2.0  # seconds between json "recording" rows (what was recorded and skipped)
EARLY_COMMIT = 0.5  # of commit_every: how much earlier a statistics step commits (`_commit_due`)


class Coasting:
    """The recorder's coasting steps and their accounting (the attributes below are the recorder's)."""

    writer: RunWriter
    budget: Budget
    step_index: int
    commit_every: float
    poll_every: float
    _last_commit: float
    _last_poll: float
    _last_report: float
    _last_step_time: float | None
    _returned: float | None
    _background_seen: tuple[float, float]
    _coast_left: int
    _stats_next: bool
    _carried: float
    _entered: float | None
    _planned_at: float
    _wall_steps: deque[float]
    _coasted: list[tuple[int, float, float | None, float, int]]
    _hook_s: float | None
    _cpu: Callable[[], float]
    _own_cpu: Callable[[], float]
    _arm: Callable[[str], None]

    def _typical_wall(self) -> float:
        """The median of recent wall seconds from step to step, as plan() is given it (0: unknown)."""
        return statistics.median(self._wall_steps) if self._wall_steps else 0.0

    def _commit_due(self, now: float, plan: str = PLAIN) -> bool:
        """A commit is due at `now` on a step of `plan`: `commit_every` after the last, on a
        statistics step EARLY_COMMIT of it earlier (statistics that come more often than commits
        then carry them all, and no coasting step is made a full one by a commit: docs/speed.md)."""
        soon = self.commit_every * EARLY_COMMIT if plan in (STATS, MAPS) else 0.0
        return now - self._last_commit >= self.commit_every - soon

    def _nothing_due(self, now: float) -> bool:
        """No commit, report or control poll is due at `now` (a coasting step does none of them)."""
        return (
            not self._commit_due(now)
            and now - self._last_poll < self.poll_every
            and now - self._last_report < REPORT_EVERY
        )

    def _coast(self, step: int, scalars: dict[str, float], start: float, now: float,
               loop_s: float | None, passes: int) -> int:  # fmt: skip
        """A step the budget said stays plain (plain_ahead, statistics_after): its scalars are logged,
        and the rest (its accounting, reading the writer thread's clock, planning) waits for the next
        full step; the last of statistics_after's arms the statistics of the next.
        The loop's Python objects are cold after a training step, so each one the recorder touches
        costs; here it touches few. A commit, report or control poll that falls due makes the step
        a full one (with commit_every=0 or poll_every=0 no step coasts). Its scalars (floats, by
        `_number`) join the step data at the writer's next call (`log_scalars_later`: no lock, no
        checks; they are committed with the next full step's, as they would be anyway)."""
        if scalars:
            self.writer.log_scalars_later(step, scalars)
        self.step_index = step + 1
        self._last_step_time = now
        self._coast_left -= 1
        self._coasted.append((step, now, loop_s, self._own_cpu() - start, passes))
        if self._coast_left == 0 and self._stats_next:  # the next step's statistics, with no plan between
            self._stats_next = False
            armed = self._own_cpu()
            self._arm(STATS)
            self._carried += self._own_cpu() - armed  # (charged with the statistics step, as a plan's arming)
        self._returned = self._cpu()
        return step

    def _observe_coasted(self, now_split: tuple[float, float], loop_s: float | None, step: int | None = None,
                         now: float = 0.0) -> tuple[float, float]:  # fmt: skip
        """The budget observes the steps that coasted since the last full one, each with what plan()
        would have noted at the end of the step before it. The writer thread's CPU since the last
        full step is shared by length among those steps' loops and `step()` calls and this step's
        loop (`loop_s`); the loops' parts are charged as background (the parts in coasting `step()`
        calls, ~40 µs each against a loop's milliseconds, are charged to no one: their own time is
        their thread's clock), the part spent on snapshots to the
        pictures (whose cost per snapshot the budget learns here too). Returns this step's parts
        (background, pictures) (`step`, entered at `now`; None: no step, the run closes)."""
        seen_all, seen_pictures = self._background_seen
        cpu_all, cpu_pictures = now_split
        for cpu, snapshots in self.writer.picture_costs():
            self.budget.picture_cost(cpu, snapshots)
        writer_cpu, picture_cpu = cpu_all - seen_all, max(cpu_pictures - seen_pictures, 0.0)
        coasted, self._coasted = self._coasted, []
        total = sum((loop or 0.0) + own for _, _, loop, own, _ in coasted) + (loop_s or 0.0)
        rate = writer_cpu / total if total > 0 else 0.0
        part = min(picture_cpu / writer_cpu, 1.0) if writer_cpu > 0 else 0.0  # of it on snapshots
        hook = self._hook_s or 0.0
        entered, planned_at = self._entered, self._planned_at
        for s, at, loop, own, passes in coasted:
            typical = self._typical_wall()  # (as plan() had it, before this step's wall)
            if entered is not None:
                self._wall_steps.append(at - entered)
            entered = at
            self.budget.coast(s, planned_at, typical)
            planned_at = at  # (~ the end of that step: a coasting step takes microseconds)
            spent = rate * (loop or 0.0)
            self.budget.observe(PLAIN, loop, own, 0.0, (1 - part) * spent + hook * passes, part * spent, coasted=True)
        if step is not None:
            typical = self._typical_wall()
            if entered is not None:
                self._wall_steps.append(now - entered)
            self._entered = now
            if coasted:
                self.budget.coast(step, planned_at, typical)  # it ran on the plan made before those steps
        spent = rate * (loop_s or 0.0) if total > 0 else writer_cpu
        return (1 - part) * spent, part * spent
