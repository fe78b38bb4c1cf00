"""How many threads the built-in trainer gives torch (issue: with one core busy elsewhere,
`train --steps 1500` took 45.9 s with torch's default of one thread per core and 23.5 s with one
thread: torch's threads wait for each other at every op, so one preempted thread stalls them all).

    pick_threads(cores=8, others=2.6, reserve=1)   # -> 5: 2.6 cores busy elsewhere (the server among them)
    a = look(); ...; others_busy(a, look())        # cores other processes kept busy in between

The cores are those this process may run on (`os.sched_getaffinity`, not `os.cpu_count()`: a
container or `taskset` gives fewer), and no more than its cgroup's CPU quota (`docker run
--cpus=1.5`: 2; train/cpu_quota.py), which the affinity mask does not show. Other processes' load, in cores, is those cores' busy time
between two looks (/proc/stat) less this process's own CPU time; where /proc/stat is not read, the
1-minute load average less this process's use (which lingers a minute after other work ends).
Busy cores are that load rounded (a core busy more than half the time is busy). One core is kept
for the dashboard server while a page watches the run live (runs/watched.py; the server's own load
counts towards it): `convscope demo` serves from the same machine, and on 2 cores a trainer on
both starves the niced server (20 open pages then cost training 20%, where they cost 0-4% with a
core left: bench/page.py --threads 2). Unwatched, training takes every free core. At least one
thread. An explicit setting wins: a `TrainConfig.threads` above 0, or OMP_NUM_THREADS /
MKL_NUM_THREADS.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

import torch

from convscope.runs.watched import is_watched
from convscope.train.cpu_quota import quota_cores

RECHECK_S = 30.0  # seconds of training between measures of the cores free
SAMPLE_S = 0.1  # the first measure: what other processes keep busy over this long
WATCHED_CHECK_S = 1.0  # seconds between looks at whether a page watches (a core for the server)
SERVER_CORES = 1  # left to the dashboard server while a page watches, when there is more than one core
EXPLICIT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PROC_STAT = "/proc/stat"


def pick_threads(cores: int, others: float, *, reserve: int = SERVER_CORES) -> int:
    """Threads for `cores` usable cores of which other processes keep `others` busy, with `reserve`
    cores kept for the dashboard server: the server is one of the others, so its own load counts
    towards its reserve, not twice. At least one thread."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    free = math.floor(cores - max(others, reserve, 0.0) + 0.5)  # a core busy less than half the time is free
    return max(1, min(cores, free))


def usable_cores() -> int:
    """Cores this process may run on, no more than its cgroup's CPU quota allows (rounded, at least one)."""
    cores = len(usable_cpus()) or os.cpu_count() or 1  # (no affinity mask: not Linux)
    quota = quota_cores()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 0.5)))
    return cores


def load_average() -> float:
    """The 1-minute load average (0 where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


@dataclass(frozen=True)
class Look:
    """What the clocks said at one moment: wall (monotonic) and this process's CPU seconds, and the
    usable cores' (busy, all) time from /proc/stat with the cores it covers (None where unknown)."""

    wall: float
    own: float
    cores: tuple[float, float] | None
    cpus: frozenset[int] = frozenset()


def usable_cpus() -> frozenset[int]:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return frozenset()


def core_times(text: str | None = None, cpus: Set[int] | None = None) -> tuple[float, float] | None:
    """(busy, all) clock ticks of the cores `cpus` (default: the usable ones) since boot, from
    /proc/stat (or `text` in its format); busy is all but idle and iowait. Lines that are not a
    core's, or not readable, are passed over; None when no core of `cpus` was read."""
    if cpus is None:
        cpus = usable_cpus()
    if text is None:
        try:
            with open(PROC_STAT) as f:
                text = f.read()
        except OSError:
            return None
    busy = total = 0.0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        try:
            ticks = [float(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        except ValueError:
            continue
        if len(ticks) < 5:
            continue
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total > 0 else None


def look() -> Look:
    cpus = usable_cpus()
    return Look(time.monotonic(), time.process_time(), core_times(cpus=cpus), cpus)


def others_busy(before: Look, after: Look) -> float:
    """Cores other processes kept busy between two looks: the cores' busy share times their number,
    less this process's own CPU per wall second (the 1-minute load average less it where
    /proc/stat was not read, or the usable cores changed in between)."""
    own = (after.own - before.own) / max(after.wall - before.wall, 1e-9)
    b, a = before.cores, after.cores
    if b is not None and a is not None and a[1] > b[1] and before.cpus == after.cpus and after.cpus:
        share = (a[0] - b[0]) / (a[1] - b[1])
        return max(share * len(after.cpus) - own, 0.0)
    return max(load_average() - own, 0.0)


def choose_threads(configured: int = 0, *, others: float = 0.0, watched: bool = True) -> int | None:
    """The thread count to set: `configured` when > 0, None when the environment already sets
    one (torch honours it), else `pick_threads` on this machine with `others` cores busy, a core
    left to the server when a page is `watched`."""
    if configured > 0:
        return configured
    if any(os.environ.get(k) for k in EXPLICIT_ENV):
        return None
    return pick_threads(usable_cores(), others, reserve=SERVER_CORES if watched else 0)


def free_threads(sample_s: float = SAMPLE_S) -> int | None:
    """Threads for a one-off job (an analysis command, the projections worker): the usable cores
    other processes leave free over `sample_s` seconds, at least one; None when the environment
    sets a count (torch honours it; torchrun sets 1 per process). Torch's default, one thread per
    core, turns every small op into a wait for a preempted thread when the cores are busy: `units`'
    optimal stimuli took 18-21 s a map with two threads beside a running trainer, 0.3-2.1 s with one."""
    if any(os.environ.get(k) for k in EXPLICIT_ENV):
        return None
    before = look()
    time.sleep(sample_s)
    return pick_threads(usable_cores(), others_busy(before, look()), reserve=0)


class TrainerThreads:
    """The built-in trainer's torch thread count over a run (`Trainer` asks `recheck(now)` between
    steps): set when it is made, from the cores free over SAMPLE_S; looked at again at most every
    WATCHED_CHECK_S (one stat of the run's `watched` mark). When a page starts or stops watching,
    the count follows at once from the load last measured, and the load is measured anew over the
    next WATCHED_CHECK_S (the last window held the page's server at work); else every RECHECK_S."""

    def __init__(self, configured: int, run_dir: Path) -> None:
        self.configured, self.run_dir = configured, run_dir
        self.watched = is_watched(run_dir)  # a page holds the run's live stream (runs/watched.py)
        self.checked = time.monotonic()  # the last look at the mark
        self._looked = look()  # the clocks at the last measure of the cores free
        self._others = 0.0  # cores other processes kept busy, as last measured
        self._measure_at = math.inf  # monotonic time of a measure due sooner than RECHECK_S
        if configured == 0 and choose_threads() is not None:  # not set by config or environment
            time.sleep(SAMPLE_S)
        self.count = self._set()

    def _set(self, others: float | None = None) -> int:
        """Set torch's thread count for `others` busy cores (None: measured since the last
        measure, and a new window starts); the count torch now has."""
        if others is None:
            before, self._looked = self._looked, look()
            others = self._others = others_busy(before, self._looked)
        n = choose_threads(self.configured, others=others, watched=self.watched)
        if n is not None and n != torch.get_num_threads():
            torch.set_num_threads(n)
        return torch.get_num_threads()

    def recheck(self, now: float) -> bool:
        """Look again if due at `now` (monotonic seconds); True when the count was set again."""
        if now - self.checked < WATCHED_CHECK_S:
            return False
        self.checked = now
        watched = is_watched(self.run_dir)
        if watched != self.watched:
            self.watched = watched
            self.count = self._set(self._others)
            self._looked = look()
            self._measure_at = now + WATCHED_CHECK_S
        elif now >= self._measure_at or now - self._looked.wall >= RECHECK_S:
            self._measure_at = math.inf
            self.count = self._set()
        else:
            return False
        return True
