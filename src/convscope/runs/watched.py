"""Whether a page is watching a run live: the dashboard server keeps a file's time fresh while one
holds the run's event stream, and the built-in trainer reads it (train/threads.py: a core is left
to the server only while a page needs one; unwatched, training takes every free core).

    mark_watched(run_dir)            # the server, at most every MARK_EVERY_S while a page listens
    is_watched(run_dir)              # the trainer: marked within the last FRESH_S seconds

The mark is the modification time of `run_dir/watched` (an empty file; the server and the trainer
share one machine, as the run store's WAL requires). It is never followed through a symbolic link,
and a folder the server may not write to is left unmarked (the trainer then keeps every core).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

WATCHED_FILE = "watched"
MARK_EVERY_S = 1.0  # how often the server refreshes the mark while a page listens
FRESH_S = 5.0  # a mark older than this: no page listens any more


def mark_watched(run_dir: str | os.PathLike[str], now: float | None = None) -> bool:
    """Set the mark's time to `now` (default: the clock), creating the file; False where the folder
    is not writable, or the name is taken by something other than a plain file (left as it is)."""
    path = Path(run_dir) / WATCHED_FILE
    try:
        if not stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode):
            return False
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
        except OSError:
            return False
    except OSError:
        return False
    try:
        os.utime(path, None if now is None else (now, now), follow_symlinks=False)
    except OSError:
        return False
    return True


def is_watched(run_dir: str | os.PathLike[str], now: float | None = None, fresh_s: float = FRESH_S) -> bool:
    """A page was listening `fresh_s` seconds ago or later: the mark is a plain file whose time is
    within `fresh_s` of `now` (either side: a clock stepped back does not make it eternal)."""
    try:
        st = os.stat(Path(run_dir) / WATCHED_FILE, follow_symlinks=False)
    except OSError:
        return False
    now = time.time() if now is None else now
    return stat.S_ISREG(st.st_mode) and abs(now - st.st_mtime) <= fresh_s
