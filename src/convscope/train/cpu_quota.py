"""The CPU quota a Linux cgroup gives this process, in cores (a container's `docker run --cpus=1.5`).

    quota_cores()    # -> 1.5 under `--cpus=1.5`; None with no quota (or not Linux)

The affinity mask (`os.sched_getaffinity`) still lists every core of the host under such a
quota: a trainer that sized its threads by it alone would run more threads than it has CPU time
for, and the kernel stops all of them for the rest of each period once the quota is spent. The
quota is read from the cgroup files the kernel keeps for this process: cgroup v2's `cpu.max`
("max 100000" or "150000 100000") and cgroup v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us`
(-1: none), in this process's cgroup and each one above it (the smallest applies). Inside a
container the path named in /proc/self/cgroup may not exist under the mount (the container sees
its own cgroup as the root): folders that do not exist are passed over, down to the mount
itself. Files that are missing, unreadable or malformed count as no quota: nothing here raises.
"""

from __future__ import annotations

from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_MAX_READ = 4096  # bytes read of a cgroup file (they hold a line or a few)


def quota_cores(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """Cores of CPU time per wall second that this process's cgroups allow (the smallest quota
    from its cgroup up to the root, v1 or v2), or None when none sets one or none is readable.
    `proc_cgroup` and `root` stand for /proc/self/cgroup and the cgroup mount (tests)."""
    text = _read(proc_cgroup)
    if text is None:
        return None
    limits: list[float] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        if hierarchy == "0" and controllers == "":  # cgroup v2: one tree, mounted at the root
            mounts, file, reader = [root, root / "unified"], "cgroup.controllers", _v2_limit
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own tree
            mounts, file, reader = [root / controllers, root / "cpu", root / "cpu,cpuacct"], "cpu.cfs_quota_us", _v1_limit
        else:
            continue
        mount = next((m for m in mounts if (m / file).is_file()), None)  # (a root has no cpu.max)
        if mount is None:
            continue
        for folder in _folders(mount, path):
            limit = reader(folder)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _folders(mount: Path, path: str) -> list[Path]:
    """The cgroup folder of `path` under `mount` and each one above it, that exist, the mount last."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    found = []
    for n in range(len(parts), -1, -1):
        folder = mount.joinpath(*parts[:n])
        if folder.is_dir():
            found.append(folder)
    return found


def _v2_limit(folder: Path) -> float | None:
    text = _read(folder / "cpu.max")
    fields = text.split() if text else []
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_limit(folder: Path) -> float | None:
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ratio(quota.strip(), period.strip())


def _ratio(quota: str, period: str) -> float | None:
    """quota / period when both are positive integers (v1's -1 and anything else: no quota)."""
    if not (quota.isdigit() and period.isdigit()):
        return None
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None


def _read(path: Path) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(_MAX_READ)
    except (OSError, ValueError):
        return None
