"""How far watch()'s recorder may coast: how many coming steps skip planning (train/coasting.py
runs them), and whether the last of them arms statistics. `Budget` (train/recorder_budget.py) mixes
this in; its pools, estimates and plans are read here, never changed.

    k, armed = budget.coast_ahead(step, now, step_s)   # after a plain plan for `step`: k coast,
                                                       # the last arms statistics if `armed`
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from convscope.train.recorder_costs import (
    LONG_STATS_PART,
    LOOP_OUTLIER,
    MAPS,
    PICTURE_PART,
    STATS,
    Costs,
    median,
)

COAST_MAX = 16  # steps the recorder may run without planning (plain_ahead, statistics_after), at most


def _fewer(gap: float, per_step: float) -> int:
    """The most whole steps k with k × per_step < gap (0 when gap <= 0)."""
    if gap <= 0:
        return 0
    x = gap / per_step
    return int(min(math.ceil(x) - 1, COAST_MAX))


class CoastPlan:
    """The coasting rules of a `Budget` (the attributes below are the budget's)."""

    share: float | None
    snapshot_every: float
    every: int
    last_snapshot: float | None
    costs: Costs
    stats_pool: float
    picture_pool: float
    _income: deque[float]
    earned: Callable[[float], float]
    estimate: Callable[[str], float]
    _picture_cap: Callable[[], float]
    _long: Callable[[float], bool]
    _long_needs: Callable[[], tuple[float, float]]

    def coast_ahead(self, step: int, now: float, step_s: float) -> tuple[int, bool]:
        """After plan() said plain for step `step` (at `now`; `step_s`: the longest recent step's
        wall seconds): (k, armed): the step() calls of steps `step`..`step + k − 1` skip planning,
        and the last of them arms statistics for step `step + k` when `armed`
        (`statistics_after`), else the step after them plans (`plain_ahead`)."""
        armed = self.statistics_after(step, now, step_s)
        return (armed, True) if armed else (self.plain_ahead(now, step_s), False)

    def _snapshot_in(self, now: float) -> float | None:
        """Seconds until the next snapshot is due (≤ 0: due); None where no step may coast (no
        budget, a snapshot every step, or none taken yet)."""
        if self.share is None or self.snapshot_every == 0 or self.last_snapshot is None:
            return None
        return self.last_snapshot + self.snapshot_every - now

    def plain_ahead(self, now: float, step_s: float) -> int:
        """How many coming steps may skip planning, asked at the end of a step (at `now`) whose
        plan() for the next step said plain; `step_s`: the longest recent step (wall seconds).
        The recorder then runs that next step and `k` more on this plan, accounting for them on
        the step after (coast, then observe each), so the k plans it skips would each have seen
        1..k more observes: k is the largest number for which k of the richest recent plain steps
        (the longest recent loop's share, less the cheapest recent plain step) still leave
        statistics and a due snapshot unaffordable, and k of the longest recent steps do not
        reach the next snapshot's time (k of the shortest let a run of the longer recent steps
        reach it unplanned: the snapshot came a step late). Of each such step's earnings the
        statistics pool gets at most its largest part (`_to_stats`: 2/3, or 5/6 once the maps'
        statistics have come, whether steps stay long and their estimate stays put or not) and
        what the picture pool holds beyond its cap, the picture pool at most its third up to the
        cap (`_bound_pools`). A step that earns more than any recent one (a longer loop, or own
        work cheaper than the cheapest recent plain step's, or one costlier that moves the median
        the estimates are reckoned from) can bring its statistics a step or more later, never
        fewer of them. The step that plans after them costs more than a coasting one
        (`Costs.planning_extra`: its objects are cold after the training step), and is reckoned to
        earn that much less (else a pool a step short of its target is planned at again and again,
        each plan costing more than a step earns); and k is at least the steps that leave the
        statistics pool short at what recent steps brought it (`_income`; the bound alone closed
        the gap by about half a plan: docs/speed.md). Where planned steps cost no more than
        coasting ones, this is what planning every step would do; where they cost more, statistics
        can come a step or so later than free plans would bring them, more where steps now bring
        more than the recent ones did. 0: plan each."""
        costs = self.costs
        due_in = self._snapshot_in(now)
        if due_in is None or not costs.plain_loop:
            return 0
        longest = min(max(costs.plain_loop), LOOP_OUTLIER * costs.typical_loop())
        per_step = max(self.earned(longest) - min(costs.plain_own, default=0.0), 1e-12)  # at most
        part = LONG_STATS_PART if costs.own[MAPS] else 1 - PICTURE_PART  # (at most)
        to_stats, to_pictures = part * per_step, PICTURE_PART * per_step
        cap = self._picture_cap()
        extra = costs.planning_extra()  # the planning step's earnings fall short by this much

        def fewer_to(pool: float) -> int:
            """The most steps after which the statistics pool still holds less than `pool` once the
            planning step after them is in (it earns `extra` less): it gets `to_stats` a step, and
            the picture pool's overflow beyond its cap; so k steps leave it below `pool` when both
            of these lines do (the most it can hold is max(stats + k·to_stats, stats + pictures −
            cap + k·per_step))."""
            gap = pool - self.stats_pool
            return min(_fewer(gap + part * extra, to_stats), _fewer(gap + cap - self.picture_pool + extra, per_step))

        target = min(self._long_needs()) if self._long(step_s) else self.estimate(STATS)  # (what plan() asks)
        ahead = fewer_to(target)
        # planning costs: as far as steps bringing what recent ones did (the median, or the last if
        # more) leave it short; the planning step's shortfall at `part` (with a full picture pool all
        # of it: k errs short there)
        typical = max(median(self._income), self._income[-1]) if extra > 0 and self._income else 0.0
        if typical > 0:
            ahead = max(ahead, _fewer(target - self.stats_pool + part * extra, typical))
        if due_in > 0:
            ahead = min(ahead, _fewer(due_in, step_s) if step_s > 0 else 0)
        else:  # due: waits for the picture pool (its third a step, to its cap) or a stats pool in debt
            ahead = min(ahead, max(_fewer(cap - self.picture_pool + PICTURE_PART * extra, to_pictures), fewer_to(0.0)))
        return ahead

    def statistics_after(self, step: int, now: float, step_s: float) -> int:
        """k > 0: where a plan costs more than coasting (`Costs.planning_extra`), the plain step
        `step` and k − 1 more coast and the last of them arms statistics for step `step + k`, with
        no plan between. k: the steps that fill the statistics pool at the median of what recent
        steps brought it (`_income`; not the last step's where more, as `plain_ahead` may: nothing
        checks the pool again before these statistics), rounded up to a step that wants them
        (`every`). Planned, each statistics step had a plan before it that cost more than a step
        earns (budget simulation, plans 0.25 ms dearer: statistics on 277 of 3000 steps, 333 armed
        so, 351 with free plans: docs/speed.md). The pool can go a little into debt where those
        steps bring less, and statistics can then come a step or so earlier than plans would bring
        them. 0 (plan as usual) where plans cost no more, steps are long (the maps' rule), recent
        steps brought nothing (or nothing is known of them), k exceeds COAST_MAX, or a snapshot
        falls due within k + 1 of the longest recent steps (`step_s`)."""
        due_in = self._snapshot_in(now)
        if due_in is None or step_s <= 0 or not self._income or self.costs.planning_extra() <= 0 or self._long(step_s):
            return 0
        income = median(self._income)
        if income <= 0:
            return 0
        gap = self.estimate(STATS) - self.stats_pool
        k = max(math.ceil(gap / income), 1) if gap > 0 else 1  # (a full pool: the next wanted step)
        k += -(step + k) % self.every  # (statistics wanted on every `every`-th step: Budget.coast)
        if k > COAST_MAX or due_in <= (k + 1) * step_s:
            return 0
        return k
