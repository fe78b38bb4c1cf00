"""How many threads the built-in trainer gives torch (issue: with one core busy elsewhere,
`train --steps 1500` took 45.9 s with torch's default of one thread per core and 23.5 s with one
thread: torch's threads wait for each other at every op, so one preempted thread stalls them all).

    pick_threads(cores=8, load=2.6, own=0.0, reserve=1)   # -> 4: 5 cores free, 1 left to the server

The cores are those this process may run on (`os.sched_getaffinity`, not `os.cpu_count()`: a
container or `taskset` gives fewer); a core counts as busy when the 1-minute load average of the
OTHER processes (the load less this process's own CPU use) covers more than half of it; one core
is left to the dashboard server (a trainer is watched: `convscope demo` serves from the same
machine) and the rest of the desktop. At least one thread. An explicit setting wins: a
`TrainConfig.threads` above 0, or OMP_NUM_THREADS / MKL_NUM_THREADS in the environment.
"""

from __future__ import annotations

import math
import os

SERVER_CORES = 1  # left to the dashboard server (and the desktop) when there is more than one core
EXPLICIT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pick_threads(cores: int, load: float, *, own: float = 0.0, reserve: int = SERVER_CORES) -> int:
    """Threads for `cores` usable cores, a 1-minute `load` average of which `own` is this
    process's, keeping `reserve` cores free (as long as one thread is left)."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    others = max(load - own, 0.0)
    free = math.floor(cores - others + 0.5)  # a core busy less than half the time counts as free
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


def choose_threads(configured: int = 0, *, own: float = 0.0) -> int | None:
    """The thread count to set: `configured` when > 0, None when the environment already sets
    one (torch honours it), else `pick_threads` on this machine now."""
    if configured > 0:
        return configured
    if any(os.environ.get(k) for k in EXPLICIT_ENV):
        return None
    return pick_threads(usable_cores(), load_average(), own=own)
