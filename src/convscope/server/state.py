"""Everything one dashboard app holds between requests: no module-global state (one AppState per
`create_app`, reachable as `request.app.state.dash`).

  AppState.reader(name)     the shared reader of a run of the runs root (404 for anything else)
  AppState.open_run(name)   the same run as an OpenRun: its reader, data_version, memo (readers.py)
  AppState.pictures         LRU cache of rendered PNGs
  AppState.decodes          bounds the memory of concurrent upload decodes (DecodeBudget)
  AppState.stopping         set on shutdown: live streams end so the server can close cleanly
  AppState.workers          `convscope answer` processes for runs whose trainer has ended
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from convscope.config import ServeConfig
from convscope.runs import RunCorruptError, RunNotFoundError, RunReader, RunSchemaError

from .errors import ApiError
from .readers import OpenRun, Readers
from .workers import Workers

log = logging.getLogger("convscope.server")

T = TypeVar("T")

# memory that concurrent upload decodes may hold at once: one upload at the 25-megapixel cap
# is estimated at 350 MB while it is decoded (routes/uploads.py: decode_estimate), so two of
# those never decode together; smaller ones share the budget (at most 2 at a time, one per
# core of a small machine)
DECODE_BUDGET_BYTES = 512 * 2**20

# a run name is one directory under the root: no separators, no dot-files, no ".."
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+=@,")


class PictureCache:
    """A thread-safe LRU of PNG bytes keyed by a tuple (run, layer, kind, step, norm, ...)."""

    def __init__(self, *, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"PictureCache needs max_items >= 1, got {max_items}")
        self.max_items = max_items
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._rendering: dict[tuple[Any, ...], threading.Event] = {}  # pictures being drawn now
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, key: tuple[Any, ...], make: Callable[[], bytes]) -> bytes:
        """The cached PNG, or `make()`'s. Concurrent requests for one picture render it once: the
        first renders (outside the lock), the others wait for it (or try again if it failed)."""
        while True:
            with self._lock:
                png = self._items.get(key)
                if png is not None:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return png
                rendering = self._rendering.get(key)
                if rendering is None:
                    rendering = self._rendering[key] = threading.Event()
                    self.misses += 1
                    break
            rendering.wait()
        try:
            png = make()
            with self._lock:
                self._items[key] = png
                self._items.move_to_end(key)
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
        finally:
            with self._lock:
                del self._rendering[key]
            rendering.set()
        return png

    def __len__(self) -> int:
        return len(self._items)


class DecodeBudget:
    """Bounds the memory that image decodes (uploads) take, however many arrive at once.

    Decodes run on `max_decodes` dedicated threads (not the shared request pool), so the memory
    a decode frees is reused by the next one: with glibc, every thread that decodes keeps its
    own malloc arena, and 8 uploads on 8 pool threads kept 8 arenas of ~300 MB each. Each
    decode also reserves its estimated peak bytes (from the image header, before decoding) and
    waits while running decodes hold the rest of `max_bytes` (one bigger than the budget runs
    alone). At most `max_queued` decodes queue; past that, or after waiting `wait_s` for memory,
    ApiError 503 ("busy, try again") -- never an out-of-memory server.

        png = await budget.run(lambda: estimate(data), lambda: decode(data))   # async route
    """

    def __init__(self, *, max_bytes: int, max_decodes: int, max_queued: int, wait_s: float) -> None:
        if max_bytes < 1 or max_decodes < 1 or max_queued < 1 or not wait_s >= 0:
            raise ValueError(
                "DecodeBudget needs max_bytes >= 1, max_decodes >= 1, max_queued >= 1, wait_s >= 0"
            )
        self.max_bytes = max_bytes
        self.max_decodes = max_decodes
        self.max_queued = max_queued
        self.wait_s = wait_s
        self._threads = ThreadPoolExecutor(max_workers=max_decodes, thread_name_prefix="decode")
        self._cond = threading.Condition()
        self._bytes = 0  # reserved by running decodes
        self._active = 0
        self._queued = 0  # submitted, not finished
        self.peak_bytes = 0  # the most ever reserved at once (tests, the bench)
        self.peak_active = 0

    def close(self) -> None:
        """The server stops: its decode threads end (a decode under way finishes first)."""
        self._threads.shutdown(wait=True, cancel_futures=True)

    def _busy(self) -> ApiError:
        return ApiError(
            503, "the server is decoding other uploads and is at its memory budget: "
            "try again in a moment",
        )  # fmt: skip

    async def run(self, estimate: Callable[[], int], work: Callable[[], T]) -> T:
        """`work()` on a decode thread once its `estimate()` (peak bytes, computed on that
        thread: reading a header is still parsing untrusted bytes) fits the budget; its result."""
        with self._cond:
            if self._queued >= self.max_queued:
                raise self._busy()
            self._queued += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, self._reserved, estimate, work)
        finally:
            with self._cond:
                self._queued -= 1

    def _fits(self, nbytes: int) -> bool:
        return self._active == 0 or self._bytes + nbytes <= self.max_bytes

    def _reserved(self, estimate: Callable[[], int], work: Callable[[], T]) -> T:
        nbytes = max(0, int(estimate()))
        with self._cond:
            if not self._cond.wait_for(lambda: self._fits(nbytes), timeout=self.wait_s):
                raise self._busy()
            self._active += 1
            self._bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            self.peak_active = max(self.peak_active, self._active)
        try:
            return work()
        finally:
            with self._cond:
                self._active -= 1
                self._bytes -= nbytes
                self._cond.notify_all()


class AppState:
    """The runs root, the config, the picture cache and what this server has seen of each run."""

    def __init__(self, *, runs_root: Path, config: ServeConfig) -> None:
        root = Path(runs_root)
        if not root.is_dir():
            raise ValueError(f"runs root {root} is not a directory (create it, or point at runs/)")
        self.runs_root = root.resolve()
        self.config = config
        self.pictures = PictureCache(max_items=config.image_cache_items)
        self.decodes = DecodeBudget(
            max_bytes=DECODE_BUDGET_BYTES, max_decodes=2, max_queued=16, wait_s=60.0
        )
        self.readers = Readers()  # one RunReader per run, reused by every request
        self.stopping = threading.Event()
        self.workers = Workers()  # answer requests for runs whose trainer has ended

    # ---- runs ----------------------------------------------------------------------------
    def run_dir(self, name: str) -> Path:
        """The directory of run `name`, refusing names that are not one plain directory name."""
        if not name or name.startswith(".") or not set(name) <= _NAME_OK:
            raise ApiError(404, f"no run named {name!r}")
        path = self.runs_root / name
        if not path.is_dir():
            raise ApiError(404, f"no run named {name!r} in {self.runs_root.name}/")
        return path

    @contextmanager
    def open_run(self, name: str) -> Iterator[OpenRun]:
        """Run `name` as this app's shared OpenRun (opened on first use, then reused)."""
        path = self.run_dir(name)
        try:
            run = self.readers.acquire(name, path)
        except (RunNotFoundError, FileNotFoundError):
            raise ApiError(404, f"{name!r} is not a convscope run (no run.sqlite)") from None
        except (RunCorruptError, RunSchemaError) as exc:
            raise _unreadable(name, path, exc) from None
        try:
            yield run
        except (RunCorruptError, RunSchemaError) as exc:  # a file damaged while it is served
            raise _unreadable(name, path, exc) from None
        finally:
            self.readers.release(run)

    @contextmanager
    def reader(self, name: str) -> Iterator[RunReader]:
        """The reader of run `name`, shared by every request (RunReader is thread-safe; each
        query sees the latest commit)."""
        with self.open_run(name) as run:
            yield run.reader


def _unreadable(name: str, path: Path, exc: Exception) -> ApiError:
    """One line for a run whose file cannot be read (corrupt, another program's, a newer schema):
    422 naming the run's file by the run's name (not the server's absolute path), logged once."""
    line = " ".join(str(exc).replace(str(path), name).split())[:300]
    log.warning("run %r cannot be read: %s", name, line)
    return ApiError(422, line)
