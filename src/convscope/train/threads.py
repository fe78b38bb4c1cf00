"""How many threads the built-in trainer gives torch (issue: with one core busy elsewhere,
`train --steps 1500` took 45.9 s with torch's default of one thread per core and 23.5 s with one
thread: torch's threads wait for each other at every op, so one preempted thread stalls them all).

    pick_threads(cores=8, others=2.6, reserve=1)   # -> 5: 2.6 cores busy elsewhere (the server among them)
    a = look(); ...; others_busy(a, look())        # cores other processes kept busy in between

The cores are those this process may run on (`os.sched_getaffinity`, not `os.cpu_count()`: a
container or `taskset` gives fewer). Other processes' load, in cores, is those cores' busy time
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
    """Cores this process may run on."""
    return len(usable_cpus()) or os.cpu_count() or 1  # (no affinity mask: not Linux)


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
