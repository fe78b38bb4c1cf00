"""The runs a dashboard app has open: one `RunReader` per run, reused by every request and the
live channel (opening one per request cost a connect and a schema check each, 160 times per
snapshot with 20 pages open), and answers memoised until the store changes.

  with readers.use("r1", path) as run:      # an OpenRun: .reader, .version(), .memo(...)
      run.reader.meta()
      run.memo(("snapshots",), lambda r: expensive(r))   # recomputed after a commit only

A change is seen with `PRAGMA data_version` on a small connection of the run's own: SQLite
changes that number when another connection (the trainer, in its process) committed since the
last time this connection asked. A reader is in autocommit mode, so every query already sees
the latest commit; the version only says when a memoised answer is out of date.

A run whose database file was replaced (another inode: the run deleted and written anew under
its name) gets a fresh reader; the old one closes when its last request ends. At most
`max_open` runs stay open (least recently used closed first), and `close()` closes them all.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from convscope.runs import RunReader
from convscope.runs.committer import sync_local

T = TypeVar("T")
DB_FILE = "run.sqlite"  # the run store's database file (docs/run-store.md)


class OpenRun:
    """One run's shared reader, its version connection and its memoised answers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ident = _ident(path)  # raises FileNotFoundError before anything opens
        self.reader = RunReader(path)  # RunNotFoundError / RunCorruptError as usual
        mode = "ro&immutable=1" if self.reader.read_only else "ro"
        try:
            self._vconn = sqlite3.connect(
                f"{(path / DB_FILE).resolve().as_uri()}?mode={mode}", uri=True,
                isolation_level=None, check_same_thread=False,
            )  # fmt: skip
        except BaseException:
            self.reader.close()
            raise
        self._lock = threading.Lock()
        self._memo: dict[tuple[Any, ...], tuple[int, Any]] = {}
        self.users = 0  # requests using it now (guarded by the pool's lock)
        self.retired = False  # replaced or evicted: closes when users reaches 0
        self.closed = False

    def version(self) -> int:
        """SQLite's data_version of this run: it changes after each commit by the trainer.
        (A writer of the run in this process — tests, a notebook — writes its queue first, as for
        every RunReader query.)"""
        sync_local(str(self.path.resolve()))
        with self._lock:
            row = self._vconn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def memo(self, key: tuple[Any, ...], make: Callable[[RunReader], T]) -> T:
        """`make(reader)`, computed again only after the store changed (or for a new key).
        The version is read before computing, so an answer is never kept past a commit."""
        v = self.version()
        with self._lock:
            hit = self._memo.get(key)
        if hit is not None and hit[0] == v:
            value: T = hit[1]
            return value
        value = make(self.reader)
        with self._lock:
            if len(self._memo) >= 64:
                self._memo.clear()
            self._memo[key] = (v, value)
        return value

    def same_file(self) -> bool:
        try:
            return _ident(self.path) == self.ident
        except OSError:
            return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reader.close()
            self._vconn.close()


def _ident(path: Path) -> tuple[int, int]:
    st = os.stat(path / DB_FILE)
    return (st.st_dev, st.st_ino)


class Readers:
    """The open runs of one app (see the module docstring); thread-safe."""

    def __init__(self, *, max_open: int = 16) -> None:
        if max_open < 1:
            raise ValueError(f"Readers needs max_open >= 1, got {max_open}")
        self.max_open = max_open
        self._runs: OrderedDict[str, OpenRun] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = 0  # readers opened so far (tests, the bench)

    @contextmanager
    def use(self, name: str, path: Path) -> Iterator[OpenRun]:
        run = self.acquire(name, path)
        try:
            yield run
        finally:
            self.release(run)

    def release(self, run: OpenRun) -> None:
        """The end of one `acquire`: a retired run closes with its last user."""
        with self._lock:
            run.users -= 1
            if run.retired and run.users == 0:
                run.close()

    def acquire(self, name: str, path: Path) -> OpenRun:
        """Run `name` at `path`, opened on first use; give it back with `release`."""
        with self._lock:
            run = self._runs.get(name)
            if run is not None and not run.same_file():
                self._retire(name)
                run = None
            if run is None:
                run = OpenRun(path)  # rare (first request, or a replaced run): under the lock
                self.opened += 1
                self._runs[name] = run
                while len(self._runs) > self.max_open:
                    self._retire(next(iter(self._runs)))
            self._runs.move_to_end(name)
            run.users += 1
            return run

    def _retire(self, name: str) -> None:
        run = self._runs.pop(name)
        run.retired = True
        if run.users == 0:
            run.close()

    def close(self) -> None:
        """Close every run (shutdown); a request still using one closes it when it ends."""
        with self._lock:
            for name in list(self._runs):
                self._retire(name)

    def __len__(self) -> int:
        return len(self._runs)
