"""What each kind of step costs the recorder, for its budget (train/recorder_budget.py): samples of
its own time in `step()`, of the probe's overhead in the training loop and of the writer thread's
work on a snapshot, and the estimates made of them (medians of recent samples: docs/speed.md).

A probed step's overhead is its loop less the median of recent plain loops (`split_loop`); from a
kind's second sample on it is charged the samples' median, not its own sample, which on a big net
is mostly the machine's swing; never less than `floor`, what was timed of the probe's work in the
loop (its reductions and the statistics probe's copy of W). Where steps are long, that timed work
alone (`overhead_of`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

PLAIN, STATS, SNAPSHOT, MAPS = "plain", "stats", "snapshot", "maps"
PROBED = (STATS, SNAPSHOT, MAPS)  # the kinds of step with a probe
WINDOW = 9  # recent samples kept per estimate (medians: a validation pass is not a cost)
LOOP_OUTLIER = 4.0  # a probed step's loop this many times the usual plain loop held other work too
PICTURE_PART = 1 / 3  # of a step's net earnings, for snapshots (the rest: statistics and diagnosis) ...
LONG_STATS_PART = 5 / 6  # ... where steps are long, the statistics' part up to this (recorder_budget.py)


def median(values: Collection[float]) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def typical(values: deque[float]) -> float:
    """A cost estimate: the median of recent samples, or the smallest while fewer than three are
    known (a one-time cost among them is not the typical one)."""
    return median(values) if len(values) >= 3 else min(values, default=0.0)


def _per_kind() -> dict[str, deque[float]]:
    return {k: deque(maxlen=WINDOW) for k in PROBED}


@dataclass
class Costs:
    """The samples and the estimates made of them (`update()`; the budget calls it when a sample
    can move them much)."""

    plain_loop: deque[float] = field(default_factory=lambda: deque(maxlen=2 * WINDOW))  # a plain step's loop
    plain_own: deque[float] = field(default_factory=lambda: deque(maxlen=2 * WINDOW))  # its time in step()
    # ... of the plain steps the recorder planned, and of those it ran without planning (coasting)
    planned_own: deque[float] = field(default_factory=lambda: deque(maxlen=2 * WINDOW))
    coasted_own: deque[float] = field(default_factory=lambda: deque(maxlen=2 * WINDOW))
    own: dict[str, deque[float]] = field(default_factory=_per_kind)  # a probed step's time in step()
    overhead: dict[str, deque[float]] = field(default_factory=_per_kind)  # its loop less a plain one
    floor: dict[str, deque[float]] = field(default_factory=_per_kind)  # the probe's work timed in the loop
    diagnosis: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))  # a diagnosis sample's
    writer_pictures: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))  # per snapshot
    long_steps: bool = False  # the budget's plan() last saw steps longer than its STATS_EVERY_S
    estimates: dict[str, float] = field(default_factory=dict)

    def estimate(self, kind: str) -> float:
        """Seconds a step of `kind` costs beyond a plain step (`typical` of recent ones: their median,
        their smallest while fewer than three; 0 unknown); a snapshot's includes the writer's work on
        it; "diagnosis": a diagnosis sample's; "base": a plain step's own time."""
        return self.estimates.get(kind, 0.0)

    def update(self) -> None:
        base = median(self.plain_own)
        est = {k: max(typical(self.own[k]) - base, 0.0) + self.overhead_of(k, median(self.floor[k]))
               for k in PROBED}  # fmt: skip
        # a snapshot step has the statistics too; then the run writer compresses and stores it
        est[SNAPSHOT] = max(est[SNAPSHOT], est[STATS]) + typical(self.writer_pictures)
        if self.own[STATS]:  # the maps' statistics are a part of the whole: one early sample of
            est[MAPS] = min(est[MAPS], est[STATS])  # theirs caught in a swing of a big net's loop
            # (~50 ms of a 1-s step) would else keep them from coming, and from being sampled again
        est["diagnosis"] = typical(self.diagnosis)
        est["base"] = base
        self.estimates = est

    def split_loop(self, kind: str, own_loop: float, *, sample: bool = True, floor: float = 0.0) -> tuple[float, float]:
        """(the part of the loop's time that earns a share, the probe's overhead in it). A loop more
        than LOOP_OUTLIER times the usual plain one did other work too (an evaluation, a pause,
        another loop): that time earns nothing, and on a probed step it is no probe overhead (the
        usual one is charged, no sample taken). A snapshot the writer compressed meanwhile is none
        either: `own_loop` is without the writer thread's CPU. `sample=False` (a kind's first
        step): its overhead is charged, and kept out of the estimate (one-time costs).

        From a kind's second sample on, a probed step is charged `overhead_of` the samples (their
        median; the smaller of two), not its own sample, which on a big net is mostly the
        machine's swing (docs/speed.md); never less than `floor`, what was timed of the probe's
        work in this loop.

        Where steps are long a probed step whose work in the loop was timed is charged that
        (`overhead_of`), and no sample is taken: a 1-s loop swings by ±15 ms from one step to the
        next, and nearly every step is probed there, so the plain loops to compare with are old
        (a host's drift of a few percent reads as tens of ms)."""
        if not self.plain_loop:
            return own_loop, 0.0
        usual = self.typical_loop()
        limit = LOOP_OUTLIER * usual
        earning = min(own_loop, limit)
        if kind == PLAIN:
            return earning, 0.0
        if floor > 0 and sample:
            self.floor[kind].append(floor)
        if own_loop > limit or (self.long_steps and floor > 0 and sample):  # (a first step: charged whole)
            return earning, min(self.overhead_of(kind, floor), earning)
        overhead = own_loop - usual  # (not clamped: the machine's swings either way, around the probe's cost)
        if sample:
            self.overhead[kind].append(overhead)
            if len(self.overhead[kind]) >= 2:  # the samples' median is charged, not this one's
                overhead = self.overhead_of(kind, floor)  # (their smallest while fewer than 3)
        return earning, min(max(overhead, floor, 0.0), earning)

    def overhead_of(self, kind: str, floor: float) -> float:
        """A probed step's overhead, to charge and to plan with: `typical` of the recent samples
        (unclamped: clamping biases it up once most swings fall below it), never less than the
        work timed in the loop (`floor`); only the floor where the samples cannot resolve it
        (the standard error of their median above the floor: resnet18-shaped at batch 8). Where
        the loops are steady (convnetjs-cifar) the median also holds what no callback times: the
        hooks' dispatch, the caches evicted. Where steps are long, the floor: a 1-s loop's swings
        bury what the timed work leaves out (resnet18-shaped at batch 8: ~2 ± 2 ms of a maps step's
        ~17, 0.2% of the step), and samples of them had the estimate jump between the floor and
        half as much again (docs/speed.md)."""
        if floor > 0 and (self.long_steps or self.noise(len(self.overhead[kind])) > floor):
            return floor
        return max(typical(self.overhead[kind]), floor, 0.0)

    def noise(self, n: int) -> float:
        """The standard error of a median difference between n probed loops and the recent plain
        ones, the loops' scale taken from the plain loops' median absolute deviation (normal
        errors: σ ≈ 1.4826 MAD, a median's error ≈ 1.2533 σ/√n)."""
        loops = self.plain_loop
        if n == 0 or not loops:
            return math.inf
        mid = median(loops)
        sigma = 1.4826 * median([abs(x - mid) for x in loops])
        return 1.2533 * sigma * math.sqrt(1 / n + 1 / len(loops))

    def planning_extra(self) -> float:
        """What a plain step the recorder plans costs it beyond one it coasts over: the median of
        recent planned ones less the dearest recent coasted one (0 until both are known). After a
        training step the recorder's objects are cold, and a planned step touches many of them
        (convnetjs-cifar at batch 32: ~0.35 ms against ~0.03 ms, more than the ~0.28 ms a step of
        ~12 ms earns at 3%)."""
        if not self.planned_own or not self.coasted_own:
            return 0.0
        return max(median(self.planned_own) - max(self.coasted_own), 0.0)

    def typical_loop(self) -> float:
        """The median loop time of recent plain steps (0 before any)."""
        return median(self.plain_loop)
