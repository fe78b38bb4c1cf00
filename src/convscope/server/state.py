"""Everything one dashboard app holds between requests: no module-global state (one AppState per
`create_app`, reachable as `request.app.state.dash`).

  AppState.reader(name)     open a run of the runs root (404 for anything else)
  AppState.pictures         LRU cache of rendered PNGs
  AppState.stopping         set on shutdown: live streams end so the server can close cleanly
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convscope.config import ServeConfig
from convscope.runs import RunNotFoundError, RunReader

from .errors import ApiError

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


class AppState:
    """The runs root, the config, the picture cache and what this server has seen of each run."""

    def __init__(self, *, runs_root: Path, config: ServeConfig) -> None:
        root = Path(runs_root)
        if not root.is_dir():
            raise ValueError(f"runs root {root} is not a directory (create it, or point at runs/)")
        self.runs_root = root.resolve()
        self.config = config
        self.pictures = PictureCache(max_items=config.image_cache_items)
        self.stopping = threading.Event()

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
    def reader(self, name: str) -> Iterator[RunReader]:
        """A reader of run `name`, closed after use (one per request: cheap, nothing shared)."""
        path = self.run_dir(name)
        try:
            r = RunReader(path)
        except RunNotFoundError:
            raise ApiError(404, f"{name!r} is not a convscope run (no run.sqlite)") from None
        try:
            yield r
        finally:
            r.close()
