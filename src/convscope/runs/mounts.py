"""Whether a run folder sits on a network file system, where SQLite's WAL must not be used.

SQLite's write-ahead log keeps its index in shared memory (the -shm file, mmap'ed): processes on
different machines see different memory, so a reader on another host can read torn pages
(https://www.sqlite.org/wal.html, "all processes using a database must be on the same host").
The run store refuses such a folder with one line saying where to put the run instead.
"""

from __future__ import annotations

import os
from pathlib import Path

# file-system types (as /proc/mounts names them) that serve files over a network
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs",
    "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.glusterfs", "fuse.cephfs",
    "lustre", "gpfs", "beegfs", "davfs", "fuse.davfs2",
})  # fmt: skip


def mount_of(path: str | os.PathLike[str], mounts: str | None = None) -> tuple[str, str] | None:
    """(mount point, file-system type) of the mount holding path, from /proc/mounts (or the given
    text in its format); None where that is not known (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = Path(path).resolve()  # a folder not made yet lands on its nearest existing parent's mount
    best: tuple[str, str] | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (target == Path(point) or Path(point) in target.parents) and (best is None or len(point) > len(best[0])):
            best = (point, parts[2])
    return best


def check_local(path: str | os.PathLike[str], mounts: str | None = None) -> None:
    """Raise ValueError when path is on a network file system (see the module docstring)."""
    found = mount_of(path, mounts)
    if found is not None and found[1] in NETWORK_FS:
        raise ValueError(
            f"the run folder {os.fspath(path)} is on a network file system ({found[1]} at {found[0]}): SQLite's"
            " write-ahead log is not safe there; write the run to the training node's local disk and view it with"
            " `convscope serve` on that node (reach it by SSH port forwarding)"
        )
