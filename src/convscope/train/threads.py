"""How many threads the built-in trainer gives torch (issue: with one core busy elsewhere,
`train --steps 1500` took 45.9 s with torch's default of one thread per core and 23.5 s with one
thread: torch's threads wait for each other at every op, so one preempted thread stalls them all).

    pick_threads(cores=8, others=2.6, reserve=1)   # -> 4: 5 cores free, 1 left to the server
    a = look(); ...; others_busy(a, look())        # cores other processes kept busy in between

The cores are those this process may run on (`os.sched_getaffinity`, not `os.cpu_count()`: a
container or `taskset` gives fewer). A core counts as busy when OTHER processes kept more than half
of it busy: the busy time of those cores between two looks (/proc/stat) less this process's own
CPU time (where /proc/stat is not readable: the 1-minute load average less this process's use; a
load average lingers for a minute after other work ends, where /proc/stat's window is the last
one). One core is left to the dashboard server while a page watches the run live (runs/watched.py;
`convscope demo` serves from the same machine: on 2 cores, a trainer on both starves the niced
server, and 20 open pages then cost training 20% where they cost 0-4% with a core left,
bench/page.py --threads 2). Unwatched, training takes every free core. At least one thread. An
explicit setting wins: a `TrainConfig.threads` above 0, or OMP_NUM_THREADS / MKL_NUM_THREADS.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

SERVER_CORES = 1  # left to the dashboard server while a page watches, when there is more than one core
EXPLICIT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PROC_STAT = "/proc/stat"


def pick_threads(cores: int, others: float, *, reserve: int = SERVER_CORES) -> int:
    """Threads for `cores` usable cores of which other processes keep `others` busy, keeping
    `reserve` cores free (as long as one thread is left)."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    free = math.floor(cores - max(others, 0.0) + 0.5)  # a core busy less than half the time is free
    return max(1, min(cores, free) - reserve)


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (0 where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


@dataclass(frozen=True)
class Look:
    """What the clocks said at one moment: wall (monotonic) and this process's CPU seconds, and the
    usable cores' (busy, all) time from /proc/stat (None where it is not readable)."""

    wall: float
    own: float
    cores: tuple[float, float] | None


def core_times(text: str | None = None, cpus: set[int] | None = None) -> tuple[float, float] | None:
    """(busy, all) clock ticks of the cores `cpus` (default: the usable ones) since boot, from
    /proc/stat (or `text` in its format); busy is all but idle and iowait."""
    try:
        if cpus is None:
            cpus = os.sched_getaffinity(0)
        if text is None:
            with open(PROC_STAT) as f:
                text = f.read()
    except (AttributeError, OSError):
        return None
    busy = total = 0.0
    for line in text.splitlines():
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total > 0 else None


def look() -> Look:
    return Look(time.monotonic(), time.process_time(), core_times())


def others_busy(before: Look, after: Look, cores: int | None = None) -> float:
    """Cores other processes kept busy between two looks (the cores' busy share, times their
    number, less this process's own CPU per wall second)."""
    own = (after.own - before.own) / max(after.wall - before.wall, 1e-9)
    if before.cores is not None and after.cores is not None and after.cores[1] > before.cores[1]:
        share = (after.cores[0] - before.cores[0]) / (after.cores[1] - before.cores[1])
        return max(share * (cores or usable_cores()) - own, 0.0)
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
