"""Retention: which snapshot steps of one (layer, kind) series a run keeps, so a run's size stays
bounded however long it trains: a cap per series, and a byte budget for the whole run.

    r = Retention(keep_recent=200, max_snapshots_per_series=400, budget_bytes=10**9)
    r.select(steps)          # the steps to keep: all if there are <= 400, else the newest 200 plus
                             # older ones thinned log-spaced back in time (the oldest step always kept)
    r.select_n(steps, 12)    # the same rule for 12 steps (the newest always kept)
    share_cuts({("conv1", "weight"): (40, 4_000_000), ("conv1", "a"): (40, 400_000)}, 1_000_000)
                             # {("conv1", "weight"): 30}: the snapshot counts that free 1 MB, biggest first

The writer calls `select` on a series as soon as it holds more than `max_snapshots_per_series`
snapshots; thinning goes down to `thin_to` (a little below the cap) so it runs about once per
`max - thin_to` new snapshots rather than at every commit. When the database would pass
`budget_bytes`, `share_cuts` says how many snapshots each series keeps: the series holding the most
bytes (big tensors: W and dL/dW of wide layers) are thinned first, down to a common byte level; a
series of small tensors below that level keeps every step. Scalars, layer statistics and JSON
values are never dropped.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

DEFAULT_BUDGET = 10**9  # bytes (1 GB) a run's database may hold; scalars and stats never dropped
MIN_BUDGET = 2**20  # an empty run's tables take ~0.3 MB of 16 KiB pages
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, kw_only=True)
class Retention:
    """Bounded snapshot history per (layer, kind) series."""

    keep_recent: int = 200  # every snapshot of the newest N snapshot steps is kept
    max_snapshots_per_series: int = 400  # a series never holds more than this after a commit
    budget_bytes: int = DEFAULT_BUDGET  # run.sqlite's pages in use stay under this (1 GB)

    def __post_init__(self) -> None:
        for name in ("keep_recent", "max_snapshots_per_series", "budget_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Retention.{name} must be an int, got {type(value).__name__}")
        if self.max_snapshots_per_series < 1:
            raise ValueError(
                f"Retention.max_snapshots_per_series must be >= 1, got {self.max_snapshots_per_series}"
            )
        if not 0 <= self.keep_recent <= self.max_snapshots_per_series:
            raise ValueError(
                f"Retention.keep_recent must be in [0, max_snapshots_per_series="
                f"{self.max_snapshots_per_series}], got {self.keep_recent}"
            )
        if self.budget_bytes < MIN_BUDGET:
            raise ValueError(
                f"Retention.budget_bytes must be >= {MIN_BUDGET} (1 MiB), got {self.budget_bytes}"
            )

    @property
    def thin_to(self) -> int:
        """How many snapshots a thinned series keeps: the cap minus a quarter of the thinned part
        (at least 1 below the cap, never below `keep_recent`)."""
        cap, recent = self.max_snapshots_per_series, self.keep_recent
        return max(recent, cap - max(1, (cap - recent) // 4))

    def select(self, steps: Iterable[int]) -> list[int]:
        """The steps to keep, ascending: all of them while there are at most
        `max_snapshots_per_series`, else `thin_steps(steps, keep_recent, thin_to)`."""
        ordered = sorted(set(steps))
        if len(ordered) <= self.max_snapshots_per_series:
            return ordered
        return thin_steps(ordered, keep_recent=self.keep_recent, limit=self.thin_to)

    def select_n(self, steps: Iterable[int], n: int) -> list[int]:
        """At most `n` >= 1 of `steps` by the same rule, for a series thinned to fit the budget: the
        newest min(keep_recent, n // 2) (at least the newest one) and older ones log-spaced."""
        if n < 1:
            raise ValueError(f"a thinned series keeps at least 1 snapshot, got n={n}")
        return thin_steps(steps, keep_recent=max(1, min(self.keep_recent, n // 2)), limit=n)


def share_cuts(series: Mapping[K, tuple[int, int]], free: int) -> dict[K, int]:
    """How many snapshots each series keeps so that about `free` bytes are freed, biggest first.

    `series` maps a key to (snapshot count, bytes). Every series holding more bytes than a common
    level L is cut down to L (its count scaled by L / bytes, rounded down, at least 1); L is the
    highest level that frees `free` bytes, or 0 (one snapshot per series) when nothing higher
    does. Returns {key: new count} for the series that lose snapshots. Counts scale bytes by the
    series' mean snapshot size, so the caller measures what was freed and asks again if short."""
    if free <= 0:
        return {}
    ranked = sorted(series.items(), key=lambda kv: -kv[1][1])  # stable: ties keep their order
    sizes = [b for _, (_, b) in ranked]
    level, total = 0.0, 0
    for j, b in enumerate(sizes, start=1):
        total += b
        level = (total - free) / j
        if level >= (sizes[j] if j < len(sizes) else 0):
            break
    level = max(level, 0.0)
    cuts: dict[K, int] = {}
    for key, (count, nbytes) in ranked:
        if nbytes <= level or count <= 1:
            continue
        keep = max(1, math.floor(count * level / nbytes))
        if keep < count:
            cuts[key] = keep
    return cuts


def thin_steps(steps: Iterable[int], *, keep_recent: int, limit: int) -> list[int]:
    """At most `limit` of `steps` (ascending): the newest `keep_recent` all kept; of the older ones,
    the ones nearest to `limit - keep_recent` target ages (distance back from the newest step)
    spaced evenly in log(age) between the oldest and the youngest older step. The oldest step is
    always kept (the run's starting point), as is the older step next to the recent window.
    Deterministic: the same steps give the same answer."""
    if keep_recent < 0 or limit < keep_recent:
        raise ValueError(
            f"need 0 <= keep_recent <= limit, got keep_recent={keep_recent}, limit={limit}"
        )
    ordered = sorted(set(steps))
    if len(ordered) <= limit:
        return ordered
    split = len(ordered) - keep_recent
    old, recent = ordered[:split], ordered[split:]
    budget = limit - keep_recent
    if budget == 0:
        return recent
    if budget == 1:
        return [old[0], *recent]
    newest = ordered[-1]
    # log-ages of the older steps, ascending (youngest first); ages are >= 1 since steps are unique
    log_ages = [math.log(newest - s) for s in reversed(old)]
    lo, hi = log_ages[0], log_ages[-1]
    kept: set[int] = set()
    for i in range(budget):
        target = lo + (hi - lo) * i / (budget - 1)
        j = bisect.bisect_left(log_ages, target)
        if j == len(log_ages) or (j > 0 and target - log_ages[j - 1] <= log_ages[j] - target):
            j -= 1
        kept.add(old[len(old) - 1 - j])
    return [*sorted(kept), *recent]
