"""What `watch()` records on each step so that training does not notice: the recorder measures its
own cost and keeps it within a share (default 3%) of the step time, and says what it skipped.

Loss and scalars are written every step. The optional work is planned one step ahead (the probe
that captures a pass must be in place before its forward):

  stats      per-layer statistics (and, when due, a live-diagnosis sample) of the next step
  maps       the statistics of the maps only (z, a, dL/da), not the weights' side (‖W‖, ‖dL/dW‖,
             the update ratio: the copy of W before the optimizer step and three passes over
             every weight): only where a step is longer than STATS_EVERY_S, so statistics are
             wanted every step, and the pool cannot pay the whole statistics every step
  snapshot   the same plus tensor snapshots of the pictures (due every `snapshot_every` seconds)
  plain      neither: only the scalars

Accounting, per step: the training earns `share × t_train − min(unseen × share × t_train, unseen_max)`
(`unseen`: the part left for what the recorder cannot measure of itself, at most `unseen_max`
seconds a step: watch() leaves a fifth, at most 0.5 ms, since what it cannot see is mostly per
step, not per second of training: docs/speed.md; t_train: the loop's own
time on the process's CPU clock, from the recorder returning to the next `step()` call, less the
probe's overhead). The recorder is charged what it costs: its time inside `step()` (on its thread's
CPU clock: watch.py `_own_cpu`; answering controls excluded, polling for them included), the CPU of
the run writer's thread and of its timing hooks in the loop (both
moved from the loop's time to the recorder's), and on a probed step the probe's overhead
(train/recorder_costs.py `Costs.split_loop`: a median of recent samples, never less than the
reductions timed in the loop and the statistics probe's copy of W before the optimizer step; where
steps are long, those alone when any was timed).
The earnings go to two pools: 1/3 to pictures (snapshots; once it holds one snapshot's cost the
rest flows to statistics) and 2/3 to statistics and diagnosis (`_to_stats`: where steps are longer
than STATS_EVERY_S, up to 5/6 for MAPS_MARGIN × the maps' statistics' cost a step; off, 0). The writer thread's work on a
snapshot after its step is the picture pool's alone, and a snapshot's estimate includes it
(`picture_cost`). A job runs when its pool holds its estimated cost (the median of its recent
costs; the smallest while fewer than three are known, so one-time costs do not hold a kind back).
A kind's first step gives no sample of its own cost or probe overhead; a diagnosis sample on the
recorder's first step gives no estimate and is paid from the picture pool. Within the statistics
pool statistics come first: a diagnosis sample is taken only when the pool's recent income still
brings statistics every CADENCE_MARGIN × STATS_EVERY_S (or every step, when a step is longer);
else it waits, counted as skipped, until DIAGNOSIS_FLOOR × `diagnose_every` statistics steps went
without one. Where a step is longer than STATS_EVERY_S the maps' statistics come first too: a step
whose pool holds the whole statistics' cost has them, else one whose pool holds the maps' has
those (`maps`), so the weights' side comes as often as what is left pays for it, and at least on
every WEIGHTS_FLOOR-th statistics step (then the step waits for the whole cost). A diagnosis sample
needs the weights' side; an overdue one is saved for (`_long_step`) while the maps' statistics go
on. The tallies count both kinds (`weight_steps`; the whole statistics add to the maps' the
weights' side, the copy of W and three passes over every weight: docs/speed.md has both costs as
measured on resnet18-shaped at batch 8). With `share=None` every job runs on schedule whatever it
costs (the tests' exact mode). What was skipped is counted and reported (`report()`), and the
recorder writes it into the run (json "recording") for the page. docs/speed.md gives the
measurements behind each rule.

Coasting (train/coasting.py): how many coming steps skip planning, and whether the last of them arms
statistics, is train/coast_plan.py's (`coast_ahead()`); `coast()` notes what a step run without
planning wanted.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from convscope.train.coast_plan import CoastPlan
from convscope.train.recorder_costs import (
    LONG_STATS_PART,
    MAPS,
    PICTURE_PART,
    PLAIN,
    SNAPSHOT,
    STATS,
    WINDOW,
    Costs,
    median,
)
from convscope.train.recording_tally import Tally, describe

__all__ = ["MAPS", "PLAIN", "SNAPSHOT", "STATS", "Budget"]
# (PICTURE_PART of the earnings to snapshots, and where steps are long the statistics' part up to
# LONG_STATS_PART, are in recorder_costs.py) ...
MAPS_MARGIN = 0.0  # ... for this many times the maps' statistics a step (`_to_stats`). Off: with 1.5
# (64a7038) the pool spent what it gained on the weights' side and diagnosis samples, not on the maps'
# statistics every step, and the pictures got half: bench/long_steps.py --steps 200, one run each on
# 3f3eb25, statistics on 179 of 201 steps, the weights' side on 86, 1 snapshot, against 189, 31 and
# 3 with it off (docs/speed.md)
REFRESH_EVERY = 8  # plain steps between refreshes of the estimates, once their windows are full
STATS_EVERY_S = 0.25  # the page's live numbers: per-layer statistics at least this often (or every step)
CADENCE_MARGIN = 0.8  # a diagnosis sample must leave statistics within this part of STATS_EVERY_S
DIAGNOSIS_FLOOR = 4  # × diagnose_every statistics steps: a sample then even if it delays statistics
WEIGHTS_FLOOR = 8  # statistics steps of the maps only, at most, before one with the weights' side


@dataclass
class Budget(CoastPlan):
    """Plans each step's optional work within `share` of the step time (None: no limit)."""

    share: float | None = 0.03
    snapshot_every: float = 2.0  # seconds between snapshots, when they fit (0: every step, whatever it costs)
    every: int = 1  # statistics only on steps that are a multiple of this
    diagnose_every: int = 4  # steps between live-diagnosis samples (0 = never); within a budget also
    # statistics steps between them (statistics on every 20th step: a sample on every 80th)
    unseen: float = 0.0  # part of the share left for what the recorder cannot measure of itself ...
    unseen_max: float = math.inf  # ... at most these seconds a step
    stats_pool: float = 0.0  # seconds of recorder time the statistics may still spend
    picture_pool: float = 0.0
    last_snapshot: float | None = None  # time of the last snapshot (None: one is due now)
    last_diagnosis: int | None = None  # step of the last diagnosis sample
    total: Tally = field(default_factory=Tally)
    window: Tally = field(default_factory=Tally)
    costs: Costs = field(default_factory=Costs)  # the samples of what each kind of step costs, and the estimates
    _income: deque[float] = field(default_factory=lambda: deque(maxlen=2 * WINDOW))  # to the stats pool, per step
    _probed_since: int = 0  # statistics steps since the last diagnosis sample
    _maps_since: int = 0  # statistics steps of the maps only since the last with the weights' side
    _plain_seen: int = 0  # plain steps observed (the estimates are refreshed every REFRESH_EVERY of them)
    _warm: set[str] = field(default_factory=set)  # kinds whose first (one-time) step has been seen
    _planned: tuple[bool, bool] = (False, False)  # the step being run: (statistics wanted, snapshot due)

    def __post_init__(self) -> None:
        if self.share is not None and not 0 < self.share < 1:
            raise ValueError(f"budget must be a share of the step time in (0, 1) or None, got {self.share}")
        if not 0 <= self.unseen < 1:
            raise ValueError(f"unseen must be a part of the share in [0, 1), got {self.unseen}")
        if not self.unseen_max >= 0:
            raise ValueError(f"unseen_max must be >= 0 seconds, got {self.unseen_max}")

    def earned(self, train: float) -> float:
        """What `train` seconds of the loop earn the recorder: its share, less the part left unseen."""
        assert self.share is not None
        whole = self.share * train
        return whole - min(self.unseen * whole, self.unseen_max)

    # ---- estimates (train/recorder_costs.py) ---------------------------------------------
    def estimate(self, kind: str) -> float:
        """Seconds a step of `kind` costs beyond a plain step (`Costs.estimate`)."""
        return self.costs.estimate(kind)

    def diagnosis_estimate(self) -> float:
        return self.costs.estimate("diagnosis")

    def typical_loop(self) -> float:
        """The median loop time of recent plain steps (0 before any)."""
        return self.costs.typical_loop()

    # ---- accounting -----------------------------------------------------------------------
    def picture_cost(self, cpu_s: float, snapshots: int = 1) -> None:
        """The run writer's thread took `cpu_s` to compress and store `snapshots` snapshots: a
        sample of what a snapshot costs beyond its step (charged as `observe(pictures_s=)`)."""
        if snapshots > 0:
            self.costs.writer_pictures.append(cpu_s / snapshots)
            self.costs.update()

    def observe(
        self,
        kind: str,
        loop_s: float | None,
        own_s: float,
        diagnosis_s: float = 0.0,
        background_s: float = 0.0,
        pictures_s: float = 0.0,
        probed_s: float = 0.0,
        coasted: bool = False,
    ) -> None:
        """One finished step: what it recorded (`kind`), the loop's time before it (None for the
        first step), the recorder's time in `step()` (answering controls excluded; the diagnosis
        sample's `diagnosis_s` included), and `background_s`: CPU seconds the recorder spent
        elsewhere since the last step (the run writer's thread, the timing hooks in the loop),
        counted in the loop's time by the process clock: moved from the training to the recorder.
        `pictures_s`: the writer thread's CPU on snapshots, beside `background_s` (not part of it),
        is the pictures' alone: the picture pool pays it (`background_s` is shared like a plain
        step's cost). Neither may be in `own_s` (the recorder takes what the writer did during
        `step()` out of it). `probed_s`: the time the probe's own reductions (and the statistics probe's copy of
        W) took inside the loop (`train.stats.Reductions.spent`), measured directly: the least
        probe overhead charged, and where steps are long the overhead charged. `coasted`: a plain
        step the recorder ran without planning (`plain_ahead`; its own time a sample of that, the
        others' of a planned one: `Costs.planning_extra`)."""
        background_s = min(background_s, loop_s or 0.0)
        pictures_s = min(pictures_s, (loop_s or 0.0) - background_s)
        first = not self._warm  # the recorder's first step: its one-time costs are the picture pool's
        costs = self.costs
        earning = overhead = 0.0
        if loop_s is not None:
            own_loop = loop_s - background_s - pictures_s  # the writer thread's CPU moved out first
            earning, overhead = costs.split_loop(kind, own_loop, sample=kind in self._warm, floor=probed_s)
            if kind == PLAIN:
                costs.plain_loop.append(own_loop)
        if kind == PLAIN:
            costs.plain_own.append(own_s)
            (costs.coasted_own if coasted else costs.planned_own).append(own_s)
            self._plain_seen += 1
        elif kind in self._warm:
            costs.own[kind].append(own_s - diagnosis_s)
        else:  # a kind's first step pays one-time costs (first probe pass, layer table): not an estimate
            self._warm.add(kind)
        if diagnosis_s and not first:  # (the first sample also sets up every tally: no estimate)
            costs.diagnosis.append(diagnosis_s)
        if kind != PLAIN or diagnosis_s or self._plain_seen % REFRESH_EVERY == 0 or len(costs.plain_own) < WINDOW:
            costs.update()  # (medians: refreshed when a sample can move them much)
        train = max(earning - overhead, 0.0)
        cost = own_s + overhead + background_s
        wanted, due = self._planned
        self._planned = (False, False)
        if kind != PLAIN:
            self._maps_since = self._maps_since + 1 if kind == MAPS else 0
        for t in (self.total, self.window):
            t.steps += 1
            t.train_s += train
            t.cost_s += cost + pictures_s
            t.stats_steps += kind != PLAIN
            t.stats_skipped += wanted and kind == PLAIN
            t.weight_steps += kind in (STATS, SNAPSHOT)
            t.snapshots += kind == SNAPSHOT
            t.snapshots_late += due and kind != SNAPSHOT
        if self.share is None:
            return
        base = (own_s if kind == PLAIN else min(costs.estimate("base"), own_s)) + background_s
        net = self.earned(train) - base
        income = self._to_stats(net)
        self.picture_pool += net - income
        self.stats_pool += income
        if kind == SNAPSHOT:
            stats_part = min(self.estimate(STATS), cost - base)
            self.stats_pool -= stats_part
            self.picture_pool -= cost - base - stats_part
        elif kind in (STATS, MAPS):
            self.stats_pool -= cost - base - diagnosis_s
        if first:
            self.picture_pool -= diagnosis_s
        else:
            self.stats_pool -= diagnosis_s
        self.picture_pool -= pictures_s
        self._income.append(income + self._bound_pools())

    def _to_stats(self, net: float) -> float:
        """The statistics pool's part of a step's net earnings: 2/3 (the pictures 1/3). Where steps
        are longer than STATS_EVERY_S (as plan() last saw them), statistics are wanted on every step
        and the pictures cannot come every ~2 s anyway: up to LONG_STATS_PART, so that the pool earns
        MAPS_MARGIN × the maps' statistics' cost a step (a margin for the swings of its estimate;
        resnet18-shaped at batch 8: docs/speed.md). MAPS_MARGIN is 0 (off): see its comment."""
        part = (1 - PICTURE_PART) * net
        if net > 0 and self.costs.long_steps and self.costs.own[MAPS]:
            part = max(part, min(LONG_STATS_PART * net, MAPS_MARGIN * self.estimate(MAPS)))
        return part

    def _picture_cap(self) -> float:
        """What the picture pool holds at most (beyond it, earnings flow to statistics), and what a
        snapshot asks of it: a snapshot's cost beyond the statistics it also has."""
        return self.estimate(SNAPSHOT) - self.estimate(STATS)

    def _bound_pools(self) -> float:
        """A full picture pool overflows into statistics; neither saves up without bound (no
        bursts after an idle spell), nor sinks so deep it takes long to come back. Returns what
        overflowed (income of the statistics pool)."""
        cap = self._picture_cap()
        overflow = 0.0
        if self.picture_pool > cap:
            overflow = self.picture_pool - cap
            self.stats_pool += overflow
            self.picture_pool = cap
        self.picture_pool = max(self.picture_pool, -2 * max(cap, 0.0))
        room = 2 * self.estimate(STATS) + self.diagnosis_estimate()
        self.stats_pool = min(max(self.stats_pool, -room), room)
        return overflow

    # ---- planning -------------------------------------------------------------------------
    def plan(self, step: int, now: float, step_s: float = 0.0) -> str:
        """What step `step` (the next one) records, decided at `now` (seconds); `step_s`: a typical
        step's wall seconds (0: unknown; then never the maps only)."""
        self.coast(step, now)
        self.costs.long_steps = self._long(step_s)
        wanted, due = self._planned
        if self.share is None or self.snapshot_every == 0:  # no budget, or a snapshot every step asked
            kind = SNAPSHOT if due else STATS if wanted else PLAIN
        elif self.last_snapshot is None:
            kind = SNAPSHOT  # the first step: the layer table, a first picture, first costs
        elif due and self.picture_pool >= self._picture_cap() and self.stats_pool >= 0:
            kind = SNAPSHOT  # its pictures from the picture pool, its statistics from the other
        elif wanted and self._long(step_s):
            kind = self._long_step()
        elif wanted and self.stats_pool >= self.estimate(STATS):
            kind = STATS
        else:
            kind = PLAIN
        return kind

    def _long_step(self) -> str:
        """What a step longer than STATS_EVERY_S records (statistics wanted on every step): the whole
        statistics when the pool holds their cost, else the maps' when it holds theirs. The pool may
        owe one step's weights' side (`credit`: the whole cost less the maps'), so a pool that earns
        the maps' statistics every step and the weights' side on every WEIGHTS_FLOOR-th leaves no step
        plain. The WEIGHTS_FLOOR-th statistics step in a row without the weights' side has them (or
        none). An overdue diagnosis sample (DIAGNOSIS_FLOOR × `diagnose_every` statistics steps
        without one; it needs the weights' side) is saved for: the whole statistics then wait until
        the pool holds the sample's cost too, but for that floor, while the maps' go on."""
        whole, maps_only = self._long_needs()
        if self.stats_pool >= whole:
            return STATS
        return MAPS if self.stats_pool >= maps_only else PLAIN

    def _long_needs(self) -> tuple[float, float]:
        """The statistics pool `_long_step` needs for the whole statistics and for the maps' only
        (inf at the WEIGHTS_FLOOR-th: then the whole or none)."""
        stats, maps = self.estimate(STATS), self.estimate(MAPS)
        credit = max(stats - maps, 0.0) if self.costs.own[MAPS] else 0.0  # (none before the maps' cost is known)
        if self._maps_since >= WEIGHTS_FLOOR:
            return stats - credit, math.inf
        return stats + (self.diagnosis_estimate() if self._diagnosis_overdue() else 0.0), maps - credit

    def _long(self, step_s: float) -> bool:
        """Steps of `step_s` wall seconds want statistics on every step (longer than STATS_EVERY_S),
        within a budget: the maps' statistics may come without the weights' side (`_long_step`)."""
        return self.share is not None and step_s >= STATS_EVERY_S

    def _diagnosis_overdue(self) -> bool:
        """DIAGNOSIS_FLOOR × `diagnose_every` statistics steps went without a diagnosis sample."""
        return self.diagnose_every > 0 and self._probed_since >= DIAGNOSIS_FLOOR * self.diagnose_every

    def _next_stats(self, step_s: float) -> float:
        """The estimated cost of the next statistics step: the maps' only when they may come without
        the weights' side (long steps, the floor not reached) and their cost is known."""
        stats = self.estimate(STATS)
        if self.costs.own[MAPS] and self._long(step_s) and self._maps_since < WEIGHTS_FLOOR:
            return min(stats, self.estimate(MAPS))
        return stats

    def coast(self, step: int, planned_at: float, step_s: float | None = None) -> None:
        """Note what step `step`, planned at `planned_at`, wants (statistics on every `every`-th
        step) and whether a snapshot is due: plan() notes it, and a step run without planning
        (within plain_ahead) is noted with the time the step before it ended and `step_s`, the
        typical step plan() would have been given then (whether steps are long: `_to_stats`)."""
        due = self.last_snapshot is None or planned_at - self.last_snapshot >= self.snapshot_every
        self._planned = (step % self.every == 0, due)
        if step_s is not None:
            self.costs.long_steps = self._long(step_s)

    def diagnose(self, step: int, step_s: float = 0.0) -> bool:
        """Whether this probed step also gives the live diagnosis a sample (decided on it, before
        it is observed); `step_s`: a typical step's wall seconds (0: unknown)."""
        if not self.diagnose_every:
            return False
        self._probed_since += 1
        if self.last_diagnosis is not None and step - self.last_diagnosis < self.diagnose_every:
            return False
        if self.share is not None and self.last_diagnosis is not None and self._probed_since < self.diagnose_every:
            return False  # within a budget: a sample per `diagnose_every` statistics steps, not more
        ok = self.share is None or self._diagnosis_fits(step_s)
        for t in (self.total, self.window):
            t.diagnosis_samples += ok
            t.diagnosis_skipped += not ok
        if ok:
            self.last_diagnosis = step
            self._probed_since = 0
        return ok

    def _diagnosis_fits(self, step_s: float) -> bool:
        """Statistics come first: a sample is taken when, once this step's statistics and the
        sample are paid, the pool's recent income still brings the next statistics step within
        CADENCE_MARGIN × STATS_EVERY_S (or on the next step, when a step is longer). A sample that
        would delay them waits; after DIAGNOSIS_FLOOR × `diagnose_every` statistics steps without
        one, it is taken when the pool holds its cost (the diagnosis is not starved for good)."""
        cost = self.diagnosis_estimate()
        if self._diagnosis_overdue():
            return self.stats_pool >= cost
        steps = max(self.every, int(CADENCE_MARGIN * STATS_EVERY_S / step_s) if step_s > 0 else 1)
        after = self.stats_pool - self.estimate(STATS) - cost  # (a sample comes on a step with the whole statistics)
        return after + steps * median(self._income) >= self._next_stats(step_s)

    # ---- what it did ----------------------------------------------------------------------
    def report(self, *, reset_window: bool = True) -> dict[str, Any]:
        """The json "recording" row: budget, this window's and the run's tallies, a sentence on each."""
        w, t = self.window.as_dict(), self.total.as_dict()
        out = {"budget": self.share, "snapshot_every_s": self.snapshot_every, "window": w, "total": t,
               "note": describe(self.share, self.window), "total_note": describe(self.share, self.total)}  # fmt: skip
        if reset_window:
            self.window = Tally()
        return out

