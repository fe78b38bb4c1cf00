"""The run store: where the training side (RunWriter) and the serving side (RunReader) meet.

One directory per run: `run.sqlite` (SQLite in WAL mode: one writer, many readers, also from other
processes; committed steps survive `kill -9`) and `checkpoints/NAME.safetensors` beside it. The
contract is docs/run-store.md; in short:

    w = RunWriter("runs/exp1", config={"lr": 0.01}, meta={"model": "zoo:convnetjs-cifar"})
    w.log_scalars(12, {"loss": 2.3}); w.log_layer_stats(12, "conv1", {"a_mean": 0.4})
    w.log_snapshot(12, "conv1", "a", a[:1]); w.commit(12)    # one transaction per step
    w.close(status="finished")

    r = RunReader("runs/exp1")                # read-only; from any process
    r.scalars(["loss"], since=10)             # {"loss": [(12, 2.3)]}
    r.snapshot("conv1", "a", step=20)         # (12, float32 tensor): newest at or before step 20

Details the contract leaves open, decided here:
- Writes before `commit` are buffered in memory (already validated and encoded) and written in
  one short `BEGIN IMMEDIATE ... COMMIT` by `commit(step)`: a reader never sees half a step, and
  the write lock is held for milliseconds, not for a whole training step, so the dashboard's
  `send_control` is never starved. `ack_control` and `save_checkpoint` write at once (a paused
  trainer must still be able to answer). Uncommitted writes are dropped by `close()` unless
  status is "finished" (then they are committed as the last step).
- `synchronous=NORMAL`: in WAL mode a commit is durable against a process crash (`kill -9`) and
  the database is never corrupted; only an OS crash or power cut can roll back the last few
  commits. FULL would fsync the WAL at every step (milliseconds each on ordinary disks) for a
  guarantee a live training view does not need. Checkpoint files are fsynced before they are
  renamed into place.
- `since` is exclusive (steps > since), like `controls(since_id)`: pass the last step you have.
- Times (`created`, `updated`, control `time`) are Unix seconds (float).
- Steps never decrease: logging or committing a step below the last committed one is an error;
  committing the same step again is allowed (it adds to / replaces that step's rows).
- Deleted snapshot rows' pages are reused by SQLite; the file is never VACUUMed (it stays at its
  high-water mark, which retention bounds).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import torch

from convscope.runs.codec import Encoded, decode, encode
from convscope.runs.retention import Retention

if sys.platform != "win32":
    import fcntl

SCHEMA_VERSION = 1  # bump on any incompatible change to the tables below
DB_NAME = "run.sqlite"
CHECKPOINT_DIR = "checkpoints"
LOCK_NAME = ".writer.lock"  # flock'ed by the one live RunWriter of a run
PAGE_SIZE = 16384  # bytes per database page (see _create)
BUSY_TIMEOUT_S = 2.0  # SQLite's busy handler waits this long for a lock, per statement
RETRY_S = 10.0  # whole transactions are retried on SQLITE_BUSY until this bound, then RunBusyError
HEARTBEAT_S = 1.0  # poll_controls refreshes meta "updated" at most this often between commits
CLOSE_STATUSES = ("finished", "stopped", "crashed")
RESERVED_META = ("schema_version", "created", "updated", "last_step")  # the store sets these
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL, pos INTEGER NOT NULL);
CREATE TABLE scalars (
    name TEXT NOT NULL, step INTEGER NOT NULL, value REAL,  -- NULL = NaN (SQLite has no NaN)
    PRIMARY KEY (name, step)) WITHOUT ROWID;
CREATE INDEX scalars_step ON scalars (step);
CREATE TABLE layer_stats (
    id INTEGER PRIMARY KEY, step INTEGER NOT NULL, layer TEXT NOT NULL,
    stats TEXT NOT NULL,  -- JSON object name -> number (NaN/Infinity as Python's json writes them)
    UNIQUE (layer, step));
CREATE INDEX layer_stats_step ON layer_stats (step);
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY, layer TEXT NOT NULL, kind TEXT NOT NULL, step INTEGER NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, scale_exp INTEGER NOT NULL,
    data BLOB NOT NULL,  -- zlib(little-endian dtype values * 2**scale_exp), see codec.py
    UNIQUE (layer, kind, step));
CREATE TABLE json_values (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, step INTEGER NOT NULL, value TEXT NOT NULL,
    UNIQUE (key, step));
CREATE TABLE controls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, value TEXT NOT NULL,
    time REAL NOT NULL, applied_step INTEGER, applied_time REAL,
    result TEXT);  -- NULL until the trainer acknowledges
CREATE INDEX controls_pending ON controls (id) WHERE result IS NULL;
CREATE TABLE checkpoints (
    name TEXT PRIMARY KEY, file TEXT NOT NULL, step INTEGER, time REAL NOT NULL,
    bytes INTEGER NOT NULL);
"""

T = TypeVar("T")


# ---- errors -----------------------------------------------------------------------------------
class RunStoreError(Exception):
    """Base class of every run-store error."""


class RunNotFoundError(RunStoreError, FileNotFoundError):
    """The directory is missing or holds no run.sqlite."""


class RunExistsError(RunStoreError, FileExistsError):
    """A new run was asked for in a directory that already holds one (pass resume=True)."""


class RunCorruptError(RunStoreError):
    """run.sqlite exists but cannot be read as a convscope run."""


class RunSchemaError(RunStoreError):
    """run.sqlite was written by a newer convscope (or an unknown schema)."""


class RunBusyError(RunStoreError, TimeoutError):
    """The database stayed locked past the bounded wait, or another RunWriter holds the run."""


class RunReadOnlyError(RunStoreError):
    """A write (a control) to a run that was opened read-only: its directory cannot be written."""


@dataclass(frozen=True)
class Control:
    """A message from the dashboard, not yet acknowledged by the trainer."""

    id: int
    key: str
    value: Any
    time: float  # Unix seconds when the dashboard sent it


# ---- small helpers ----------------------------------------------------------------------------
def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _retry(op: Callable[[], T], what: str, bound_s: float = RETRY_S) -> T:
    """op(), retried while SQLite reports BUSY/LOCKED, for at most `bound_s` seconds."""
    deadline = time.monotonic() + bound_s
    delay = 0.002
    while True:
        try:
            return op()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            if time.monotonic() >= deadline:
                raise RunBusyError(f"{what}: run.sqlite stayed locked for {bound_s:g} s") from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _write_txn(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """body(conn) inside BEGIN IMMEDIATE ... COMMIT; rolled back if anything raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _dumps(what: str, value: object) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what} must be JSON-serialisable: {exc}") from exc


def _cannot_write(exc: BaseException | None) -> bool:
    """SQLite said it cannot open or write the file (SQLITE_CANTOPEN / SQLITE_READONLY)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY)


def _loads_or_none(text: str) -> Any:
    """JSON written by anything (a control row is not trusted): None when it cannot be read."""
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return None


def _name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _step(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"step must be an int, got {type(value).__name__}")
    step = int(value)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


def _number(what: str, value: object) -> float:
    """A finite or non-finite real number as float; anything else is a TypeError."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{what} must be a single number, got a tensor of shape {tuple(value.shape)}"
            )
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{what} must be a real number, got a {value.dtype} tensor")
        return float(value.detach().cpu().item())
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"{what} must be a single number, got an array of shape {value.shape}")
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{what} must be a real number, got a {value.dtype} array")
        return float(value.reshape(()))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError as exc:
        raise ValueError(f"{what} = {value} does not fit a float") from exc


def _sql_real(x: float) -> float | None:
    return None if math.isnan(x) else x  # SQLite turns NaN into NULL anyway; say so explicitly


def _db_uri(db: Path, mode: str) -> str:
    return f"{db.resolve().as_uri()}?mode={mode}"


def _check_schema(conn: sqlite3.Connection, db: Path) -> None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise
        raise RunCorruptError(f"{db} is not a convscope run ({exc})") from exc
    except sqlite3.DatabaseError as exc:
        raise RunCorruptError(f"{db} cannot be read: {exc}") from exc
    if row is None:
        raise RunCorruptError(f"{db} is not a convscope run (no schema_version in meta)")
    try:
        version = json.loads(row[0])
    except ValueError as exc:
        raise RunSchemaError(f"{db} has an unreadable schema_version {row[0]!r}") from exc
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RunSchemaError(f"{db} has an unknown schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise RunSchemaError(
            f"{db} has schema version {version}; this convscope reads up to {SCHEMA_VERSION} "
            "(upgrade convscope to open it)"
        )


def _lock_run(directory: Path) -> int | None:
    """Hold an exclusive flock on the run's lock file (released when the process dies)."""
    if sys.platform == "win32":
        return None
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunBusyError(
            f"{directory} is being written by another RunWriter (one writer per run)"
        ) from None
    return fd


def _unlock_run(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def _fsync_dir(directory: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_checkpoint_name(name: object) -> str:
    if not isinstance(name, str) or not _CHECKPOINT_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"checkpoint name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit, "
            f"no '..', no path separators), got {name!r}"
        )
    return name


@dataclass
class _Pending:
    """What the open step holds until commit: validated, encoded, keyed so a later log replaces."""

    scalars: dict[tuple[str, int], float] = field(default_factory=dict)
    stats: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    snapshots: dict[tuple[str, str, int], Encoded] = field(default_factory=dict)
    json: dict[tuple[str, int], str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    max_step: int | None = None

    def note(self, step: int) -> None:
        self.max_step = step if self.max_step is None else max(self.max_step, step)

    def has_step_data(self) -> bool:
        return bool(self.scalars or self.stats or self.snapshots or self.json)

    def drop_step_data(self) -> None:
        self.scalars.clear()
        self.stats.clear()
        self.snapshots.clear()
        self.json.clear()
        self.max_step = None


# ---- writer -----------------------------------------------------------------------------------
class RunWriter:
    """The training side: buffers one step's writes and commits them in one transaction."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        config: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        retention: Retention | None = None,
        resume: bool = False,
    ) -> None:
        if retention is not None and not isinstance(retention, Retention):
            raise TypeError(f"retention must be a Retention, got {type(retention).__name__}")
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be a bool, got {type(resume).__name__}")
        config_rows = self._json_mapping("config", config or {})
        meta_rows = self._json_mapping("meta", meta or {})
        for key in meta_rows:
            self._check_meta_key(key)
        self.path = Path(path)
        self.retention = retention or Retention()
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"run directory {self.path} is a file")
        self._db = self.path / DB_NAME
        if self._db.exists() and not resume:
            raise RunExistsError(
                f"{self.path} already holds a run; pass resume=True to continue it, or pick a new directory"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_run(self.path)
        self._lock = threading.RLock()
        self._pending = _Pending()
        self._closed = False
        try:
            if self._db.exists():
                if not resume:  # created by someone else since the check above
                    raise RunExistsError(
                        f"{self.path} already holds a run; pass resume=True to continue it"
                    )
                self._conn = self._connect()
                _check_schema(self._conn, self._db)
            else:
                self._create(config_rows, meta_rows)
                self._conn = self._connect()
            self._last_step = self._load_last_step()
            self._counts = self._load_counts()
            self._heartbeat = 0.0
            self._start(config_rows, meta_rows, resumed=resume)
        except BaseException:
            if hasattr(self, "_conn"):
                self._conn.close()
            _unlock_run(self._lock_fd)
            raise

    # -- opening ------------------------------------------------------------------------------
    @staticmethod
    def _json_mapping(what: str, mapping: Mapping[str, Any]) -> dict[str, str]:
        if not isinstance(mapping, Mapping):
            raise TypeError(f"{what} must be a mapping of str keys, got {type(mapping).__name__}")
        out = {}
        for key, value in mapping.items():
            out[_name(f"{what} key", key)] = _dumps(f"{what}[{key!r}]", value)
        return out

    @staticmethod
    def _check_meta_key(key: object) -> str:
        key = _name("meta key", key)
        if key in RESERVED_META:
            raise ValueError(
                f"meta key {key!r} is set by the run store; reserved: {list(RESERVED_META)}"
            )
        return key

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            _db_uri(self._db, "rw"), uri=True, timeout=BUSY_TIMEOUT_S,
            isolation_level=None, check_same_thread=False,
        )  # fmt: skip
        conn.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
        conn.execute("PRAGMA journal_size_limit=67108864")  # truncate a grown WAL back to 64 MiB
        return conn

    def _create(self, config_rows: dict[str, str], meta_rows: dict[str, str]) -> None:
        """Build the schema in a temporary file and rename it into place, so a reader sees
        either no run.sqlite or a complete one."""
        tmp = self.path / f".{DB_NAME}.tmp-{os.getpid()}"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        now = time.time()
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            # 16 KiB pages: a (1, 16, 32, 32) float16 snapshot (~20-30 KiB compressed) spans 2
            # pages instead of 6-8; measured ~1.5x faster commits than the 4 KiB default
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL: fixed from then on
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            # statement by statement: executescript() would COMMIT on its own
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            base = {
                "schema_version": SCHEMA_VERSION, "created": now, "updated": now,
                "status": "running", "last_step": None,
            }  # fmt: skip
            rows = {k: json.dumps(v) for k, v in base.items()} | meta_rows
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
            conn.executemany(
                "INSERT INTO config (key, value, pos) VALUES (?, ?, ?)",
                [(k, v, i) for i, (k, v) in enumerate(config_rows.items())],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, self._db)
        _fsync_dir(self.path)

    def _start(
        self, config_rows: dict[str, str], meta_rows: dict[str, str], *, resumed: bool
    ) -> None:
        now = time.time()
        rows = dict(meta_rows)
        rows["status"] = json.dumps("running")
        rows["updated"] = json.dumps(now)

        def body(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows.items())
            if resumed and config_rows:  # resume: the given keys overwrite, the others stay
                (pos,) = conn.execute("SELECT COALESCE(MAX(pos), -1) FROM config").fetchone()
                conn.executemany(
                    "INSERT INTO config (key, value, pos) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [(k, v, pos + 1 + i) for i, (k, v) in enumerate(config_rows.items())],
                )

        _retry(lambda: _write_txn(self._conn, body), "open run")
        self._heartbeat = now

    def _load_last_step(self) -> int | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'last_step'").fetchone()
        value = json.loads(row[0]) if row else None
        return value if isinstance(value, int) else None

    def _load_counts(self) -> dict[tuple[str, str], int]:
        rows = self._conn.execute(
            "SELECT layer, kind, COUNT(*) FROM snapshots GROUP BY layer, kind"
        )
        return {(layer, kind): n for layer, kind, n in rows}

    # -- logging (buffered until commit) ------------------------------------------------------
    @property
    def last_step(self) -> int | None:
        """The last committed step (None before the first commit)."""
        return self._last_step

    def _open_step(self, step: object) -> int:
        s = _step(step)
        if self._closed:
            raise RuntimeError(f"the RunWriter of {self.path} is closed")
        if self._last_step is not None and s < self._last_step:
            raise ValueError(
                f"step {s} is before the last committed step {self._last_step}; steps must not decrease"
            )
        return s

    def log_scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Scalars of `step` (name -> number; NaN/Inf are kept, they are information)."""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"log_scalars needs a mapping name -> number, got {type(values).__name__}"
            )
        rows = {
            _name("scalar name", k): v if type(v) is float else _number(f"scalar {k!r}", v)
            for k, v in values.items()
        }  # (plain floats skip the checks: this runs every step)
        with self._lock:
            s = self._open_step(step)
            for name, value in rows.items():
                self._pending.scalars[(name, s)] = value
            self._pending.note(s)

    def log_layer_stats(self, step: int, layer: str, stats: Mapping[str, Any]) -> None:
        """Per-layer statistics of `step` (name -> number); merged with earlier ones of the step."""
        _name("layer", layer)
        if not isinstance(stats, Mapping):
            raise TypeError(
                f"log_layer_stats needs a mapping name -> number, got {type(stats).__name__}"
            )
        rows = {}
        for k, v in stats.items():
            if k in ("step", "layer") or not isinstance(k, str) or not k:
                _name("stat name", k)
                raise ValueError(
                    f"stat name {k!r} is reserved (the reader adds 'step' and 'layer')"
                )
            rows[k] = v if type(v) is float else _number(f"layer stat {layer}.{k}", v)
        with self._lock:
            s = self._open_step(step)
            self._pending.stats.setdefault((layer, s), {}).update(rows)
            self._pending.note(s)

    def log_snapshot(
        self, step: int, layer: str, kind: str, tensor: torch.Tensor | np.ndarray
    ) -> None:
        """A tensor of `step` (copied and encoded now: float16 if lossless enough, else float32)."""
        _name("layer", layer)
        _name("kind", kind)
        encoded = encode(tensor)
        with self._lock:
            s = self._open_step(step)
            self._pending.snapshots[(layer, kind, s)] = encoded
            self._pending.note(s)

    def log_json(self, step: int, key: str, value: Any) -> None:
        """Any JSON value under `key` for `step`."""
        text = _dumps(f"json {key!r}", value)
        _name("json key", key)
        with self._lock:
            s = self._open_step(step)
            self._pending.json[(key, s)] = text
            self._pending.note(s)

    def set_meta(self, key: str, value: Any) -> None:
        """Run-level key -> JSON value (overwrites); written by the next commit (or close)."""
        self._check_meta_key(key)
        text = _dumps(f"meta {key!r}", value)
        with self._lock:
            self._check_open()
            self._pending.meta[key] = text

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the RunWriter of {self.path} is closed")

    # -- commit -------------------------------------------------------------------------------
    def commit(self, step: int) -> None:
        """Write everything logged since the last commit in ONE transaction and set last_step.
        On failure nothing is written and the buffered data stays (commit can be retried)."""
        with self._lock:
            s = self._open_step(step)
            if self._pending.max_step is not None and s < self._pending.max_step:
                raise ValueError(
                    f"commit({s}) but data was logged for step {self._pending.max_step}"
                )
            self._flush(s)

    def _flush(self, step: int | None, extra_meta: Mapping[str, str] | None = None) -> None:
        p = self._pending
        now = time.time()
        meta = dict(p.meta) | dict(extra_meta or {})
        meta["updated"] = json.dumps(now)
        if step is not None:
            meta["last_step"] = json.dumps(step)
        may_exist = self._last_step  # rows of this step can already be in the database

        def body(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
            conn.executemany(
                "INSERT OR REPLACE INTO scalars (name, step, value) VALUES (?, ?, ?)",
                [(n, s, _sql_real(v)) for (n, s), v in p.scalars.items()],
            )
            for (layer, s), stats in p.stats.items():
                merged = stats
                if s == may_exist:
                    row = conn.execute(
                        "SELECT stats FROM layer_stats WHERE layer = ? AND step = ?", (layer, s)
                    ).fetchone()
                    merged = (json.loads(row[0]) | stats) if row else stats
                conn.execute(
                    "INSERT OR REPLACE INTO layer_stats (step, layer, stats) VALUES (?, ?, ?)",
                    (s, layer, json.dumps(merged, allow_nan=True)),
                )
            conn.executemany(
                "INSERT OR REPLACE INTO snapshots (layer, kind, step, dtype, shape, scale_exp, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (layer, kind, s, e.dtype, json.dumps(list(e.shape)), e.scale_exp, e.data)
                    for (layer, kind, s), e in p.snapshots.items()
                ],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO json_values (key, step, value) VALUES (?, ?, ?)",
                [(k, s, v) for (k, s), v in p.json.items()],
            )
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
            return self._apply_retention(conn)

        self._counts = _retry(lambda: _write_txn(self._conn, body), f"commit step {step}")
        if step is not None:
            self._last_step = step
        p.drop_step_data()
        p.meta.clear()
        self._heartbeat = now

    def _apply_retention(self, conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
        """Thin every series that went over the cap; returns the new per-series counts."""
        counts = dict(self._counts)
        for layer, kind, _ in self._pending.snapshots:
            counts[(layer, kind)] = counts.get((layer, kind), 0) + 1  # may overcount a replace
        for series, n in counts.items():
            if n <= self.retention.max_snapshots_per_series:
                continue
            steps = [s for (s,) in conn.execute(
                "SELECT step FROM snapshots WHERE layer = ? AND kind = ? ORDER BY step", series
            )]  # fmt: skip
            kept = set(self.retention.select(steps))
            conn.executemany(
                "DELETE FROM snapshots WHERE layer = ? AND kind = ? AND step = ?",
                [(*series, s) for s in steps if s not in kept],
            )
            counts[series] = len(kept)
        return counts

    # -- controls -----------------------------------------------------------------------------
    def poll_controls(self) -> list[Control]:
        """Controls the dashboard sent that are not acknowledged yet, oldest first. Also refreshes
        the heartbeat (meta "updated") when the last one is older than HEARTBEAT_S."""
        with self._lock:
            self._check_open()
            rows = _retry(
                lambda: self._conn.execute(
                    "SELECT id, key, value, time FROM controls WHERE result IS NULL ORDER BY id"
                ).fetchall(),
                "poll_controls",
            )
            now = time.time()
            if now - self._heartbeat >= HEARTBEAT_S:
                beat = json.dumps(now)
                _retry(
                    lambda: _write_txn(self._conn, lambda c: c.execute(
                        "UPDATE meta SET value = ? WHERE key = 'updated'", (beat,)
                    )),
                    "heartbeat",
                )  # fmt: skip
                self._heartbeat = now
        controls, unreadable = [], []
        for i, k, v, t in rows:
            try:  # a row written by anything: undecodable JSON (or a 5,000-digit number) is refused, once
                controls.append(Control(i, k, json.loads(v), t))
            except (ValueError, TypeError, RecursionError):
                unreadable.append(i)
        for i in unreadable:
            self.ack_control(i, self._last_step or 0, {"ok": False, "error": "the control's value is not readable JSON"})
        return controls

    def ack_control(
        self, control_id: int, step: int, result: Mapping[str, Any] | None = None
    ) -> None:
        """Mark a control as applied at `step` with `result` (default {"ok": True}); written now."""
        if isinstance(control_id, bool) or not isinstance(control_id, int):
            raise TypeError(f"control id must be an int, got {type(control_id).__name__}")
        s = _step(step)
        if result is not None and not isinstance(result, Mapping):
            raise TypeError(
                f"result must be a mapping like {{'ok': True}}, got {type(result).__name__}"
            )
        text = _dumps("control result", {"ok": True} if result is None else dict(result))
        now = time.time()

        def body(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE controls SET applied_step = ?, applied_time = ?, result = ? "
                "WHERE id = ? AND result IS NULL",
                (s, now, text, control_id),
            )
            if cur.rowcount == 1:
                return 1
            exists = conn.execute("SELECT 1 FROM controls WHERE id = ?", (control_id,)).fetchone()
            return 0 if exists else -1

        with self._lock:
            self._check_open()
            outcome = _retry(lambda: _write_txn(self._conn, body), "ack_control")
        if outcome == 0:
            raise ValueError(f"control {control_id} was already acknowledged")
        if outcome == -1:
            raise ValueError(f"no control with id {control_id}")

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint_path(self, name: str) -> Path:
        """Where checkpoint `name` lives: checkpoints/NAME.safetensors (name validated)."""
        return self.path / CHECKPOINT_DIR / f"{_check_checkpoint_name(name)}.safetensors"

    def save_checkpoint(
        self, state_dict: Mapping[str, torch.Tensor], name: str, metadata: Mapping[str, str] | None = None
    ) -> Path:
        """Write `state_dict` to checkpoints/NAME.safetensors atomically (temp file, fsync,
        rename) and record it (table checkpoints, meta "last_checkpoint"); returns the path.
        `metadata` (str → str) goes into the file beside `convscope_step`, so the checkpoint
        describes itself (model, input_shape, mean, std, classes: what `load_model` reads)."""
        extra = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise TypeError("checkpoint metadata must map str to str (JSON text for lists)")
        from safetensors.torch import save_file

        final = self.checkpoint_path(name)
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping str -> Tensor, got {type(state_dict).__name__}"
            )
        tensors: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise TypeError(
                    f"state_dict entries must be str -> Tensor, got {key!r}: {type(value).__name__}"
                )
            tensors[key] = value.detach().to("cpu").contiguous().clone()  # clone: no shared storage
        with self._lock:
            self._check_open()
            step = max(
                (s for s in (self._last_step, self._pending.max_step) if s is not None),
                default=None,
            )
            final.parent.mkdir(exist_ok=True)
            tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            try:
                save_file(tensors, str(tmp), metadata={**extra, "convscope_step": str(step), "step": str(step)})
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(final.parent)
            row = (name, f"{CHECKPOINT_DIR}/{final.name}", step, time.time(), final.stat().st_size)

            def body(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO checkpoints (name, file, step, time, bytes) VALUES (?, ?, ?, ?, ?)",
                    row,
                )
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_checkpoint', ?)",
                    (json.dumps(name),),
                )

            _retry(lambda: _write_txn(self._conn, body), "save_checkpoint")
        return final

    def load_checkpoint(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of checkpoint `name` (for the trainer's `load_checkpoint` control)."""
        from safetensors.torch import load_file

        path = self.checkpoint_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint {name!r} in {path.parent}")
        return load_file(str(path))

    # -- closing ------------------------------------------------------------------------------
    def close(self, status: str = "finished") -> None:
        """Set the final status and release the run (idempotent). With status "finished",
        writes logged but not committed are committed as the last step; otherwise such an
        interrupted step is dropped (a reader never sees half a step)."""
        if status not in CLOSE_STATUSES:
            raise ValueError(f"status must be one of {list(CLOSE_STATUSES)}, got {status!r}")
        with self._lock:
            if self._closed:
                return
            try:
                step = None
                if status == "finished" and self._pending.has_step_data():
                    step = self._pending.max_step
                else:
                    self._pending.drop_step_data()
                self._flush(step, {"status": json.dumps(status)})
            finally:
                self._closed = True
                self._conn.close()
                _unlock_run(self._lock_fd)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("stopped")
        else:
            self.close("crashed")


# ---- reader -----------------------------------------------------------------------------------
class RunReader:
    """The serving side: read-only queries over a run (also while it is being written);
    `send_control` is its only write.

    A finished run on a read-only directory (a read-only mount, an archive) has no `-wal`/`-shm`
    files and SQLite cannot create them, so a WAL database does not open even with `mode=ro`.
    Such a run is opened `immutable=1` instead (nothing can write it, so no locking is needed):
    `read_only` is then True and `send_control` raises RunReadOnlyError."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = self.path / DB_NAME
        if not self._db.is_file():
            what = "does not exist" if not self.path.exists() else f"holds no {DB_NAME}"
            raise RunNotFoundError(f"{self.path} is not a convscope run: it {what}")
        self._lock = threading.Lock()
        self.read_only = False  # True: opened immutable on a directory that cannot be written
        try:
            self._conn = self._open("ro")
        except RunCorruptError as exc:
            if not self._cannot_create_wal(exc):
                raise
            wal = self._db.with_name(DB_NAME + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise RunCorruptError(
                    f"{self._db}: its -wal file holds steps not yet merged into the database and "
                    "the directory is read-only; copy the run to a writable place to read it"
                ) from exc
            self._conn = self._open("ro&immutable=1")
            self.read_only = True

    def _open(self, mode: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                _db_uri(self._db, mode), uri=True, timeout=BUSY_TIMEOUT_S,
                isolation_level=None, check_same_thread=False,
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise RunCorruptError(f"{self._db} cannot be opened: {exc}") from exc
        try:
            _retry(lambda: _check_schema(conn, self._db), "open run")
        except BaseException:
            conn.close()
            raise
        return conn

    def _cannot_create_wal(self, exc: RunCorruptError) -> bool:
        """True when opening failed because SQLite could not create the -shm/-wal files beside
        a WAL database: SQLITE_CANTOPEN (or READONLY) on a directory this process cannot write."""
        return _cannot_write(exc.__cause__) and not os.access(self.path, os.W_OK)

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        args = tuple(params)

        def run() -> list[Any]:
            with self._lock:
                return self._conn.execute(sql, args).fetchall()

        return _retry(run, "read")

    # -- run level ----------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """Run-level keys: status, last_step, created, updated, model, ... (JSON values)."""
        return {k: json.loads(v) for k, v in self._rows("SELECT key, value FROM meta")}

    def config(self) -> dict[str, Any]:
        return {
            k: json.loads(v) for k, v in self._rows("SELECT key, value FROM config ORDER BY pos")
        }

    def last_step(self) -> int | None:
        """The last committed step (None before the first commit)."""
        rows = self._rows("SELECT value FROM meta WHERE key = 'last_step'")
        value = json.loads(rows[0][0]) if rows else None
        return value if isinstance(value, int) else None

    def is_stale(self, seconds: float) -> bool:
        """True when the run says it is live (not finished/stopped/crashed) but its writer has not
        touched it (commit or poll_controls) for more than `seconds`: "trainer not responding".
        Compares Unix times of two machines when the store is on a shared filesystem."""
        m = self.meta()
        if m.get("status") in CLOSE_STATUSES:
            return False
        updated = m.get("updated")
        return not isinstance(updated, int | float) or time.time() - updated > seconds

    # -- per-step data ------------------------------------------------------------------------
    def scalars(
        self, names: Iterable[str] | str | None = None, since: int | None = None
    ) -> dict[str, list[tuple[int, float]]]:
        """name -> [(step, value)] in step order; only steps > `since` when given. Asked-for
        names are always keys (an empty list until logged). NaN comes back as nan."""
        conds: list[str] = []
        params: list[Any] = []
        out: dict[str, list[tuple[int, float]]] = {}
        if names is not None:
            wanted = [names] if isinstance(names, str) else list(names)
            out = {n: [] for n in wanted}
            if not wanted:
                return out
            conds.append(f"name IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        if since is not None:
            conds.append("step > ?")
            params.append(since)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        for name, step, value in self._rows(
            f"SELECT name, step, value FROM scalars{where} ORDER BY step", params
        ):
            out.setdefault(name, []).append((step, math.nan if value is None else value))
        return out

    def layer_stats(
        self, layer: str | None = None, since: int | None = None
    ) -> list[dict[str, Any]]:
        """[{"step", "layer", **stats}] in step order (layers in the order they were logged)."""
        conds: list[str] = []
        params: list[Any] = []
        if layer is not None:
            conds.append("layer = ?")
            params.append(layer)
        if since is not None:
            conds.append("step > ?")
            params.append(since)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        rows = self._rows(
            f"SELECT step, layer, stats FROM layer_stats{where} ORDER BY step, id", params
        )
        return [{"step": s, "layer": name, **json.loads(stats)} for s, name, stats in rows]

    def snapshot_series(self) -> list[tuple[str, str]]:
        """Every (layer, kind) that has snapshots, sorted."""
        return [
            (la, k)
            for la, k in self._rows(
                "SELECT DISTINCT layer, kind FROM snapshots ORDER BY layer, kind"
            )
        ]

    def snapshot_steps(self, layer: str, kind: str) -> list[int]:
        rows = self._rows(
            "SELECT step FROM snapshots WHERE layer = ? AND kind = ? ORDER BY step", (layer, kind)
        )
        return [s for (s,) in rows]

    def snapshot(
        self, layer: str, kind: str, step: int | None = None
    ) -> tuple[int, torch.Tensor] | None:
        """(step, float32 tensor) of the newest snapshot at or before `step` (None = newest)."""
        sql = (
            "SELECT step, dtype, shape, scale_exp, data FROM snapshots WHERE layer = ? AND kind = ?"
        )
        params: list[Any] = [layer, kind]
        if step is not None:
            sql += " AND step <= ?"
            params.append(step)
        rows = self._rows(sql + " ORDER BY step DESC LIMIT 1", params)
        if not rows:
            return None
        s, dtype, shape, scale_exp, data = rows[0]
        return s, decode(dtype, tuple(json.loads(shape)), scale_exp, data)

    def json(self, key: str, step: int | None = None) -> tuple[int, Any] | None:
        """(step, value) of the newest JSON value under `key` at or before `step`."""
        sql = "SELECT step, value FROM json_values WHERE key = ?"
        params: list[Any] = [key]
        if step is not None:
            sql += " AND step <= ?"
            params.append(step)
        rows = self._rows(sql + " ORDER BY step DESC LIMIT 1", params)
        return (rows[0][0], json.loads(rows[0][1])) if rows else None

    # -- controls and checkpoints ---------------------------------------------------------------
    def send_control(self, key: str, value: Any) -> int:
        """Queue a control for the trainer; returns its id. A short write transaction on its own
        connection, retried while the writer holds the lock (bounded by RETRY_S)."""
        if self.read_only:
            raise RunReadOnlyError(f"{self.path} is read-only: a control cannot be queued")
        _name("control key", key)
        text = _dumps(f"control {key!r}", value)
        now = time.time()

        def body(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO controls (key, value, time) VALUES (?, ?, ?)", (key, text, now)
            )
            return int(cur.lastrowid or 0)

        try:
            conn = sqlite3.connect(
                _db_uri(self._db, "rw"), uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise RunStoreError(f"cannot open {self._db} for writing a control: {exc}") from exc
        try:
            return _retry(lambda: _write_txn(conn, body), "send_control")
        except sqlite3.OperationalError as exc:
            if _cannot_write(exc):
                raise RunReadOnlyError(f"{self._db} cannot be written: {exc}") from exc
            raise
        finally:
            conn.close()

    def controls(self, since_id: int = 0) -> list[dict[str, Any]]:
        """[{"id", "key", "value", "time", "applied_step", "result"}] with id > since_id;
        result is None until the trainer acknowledges."""
        return self._control_rows("id > ? ORDER BY id", since_id)

    def control(self, ident: int) -> dict[str, Any] | None:
        """Control `ident` alone (as in `controls`), or None: a status poll reads one row."""
        found = self._control_rows("id = ?", ident)
        return found[0] if found else None

    def _control_rows(self, where: str, arg: int) -> list[dict[str, Any]]:
        rows = self._rows(f"SELECT id, key, value, time, applied_step, result FROM controls WHERE {where}", (arg,))
        return [
            {"id": i, "key": k, "value": _loads_or_none(v), "time": t, "applied_step": a,
             "result": None if r is None else _loads_or_none(r)}
            for i, k, v, t, a, r in rows
        ]  # fmt: skip

    def checkpoints(self) -> list[dict[str, Any]]:
        """[{"name", "file" (relative to the run directory), "step", "time", "bytes"}], oldest first."""
        rows = self._rows(
            "SELECT name, file, step, time, bytes FROM checkpoints ORDER BY time, name"
        )
        return [{"name": n, "file": f, "step": s, "time": t, "bytes": b} for n, f, s, t, b in rows]

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def list_runs(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """{"name", "status", "last_step", "model", "created", "error"} for each run directory under
    `root`, newest first. Folders without run.sqlite are skipped; a run that cannot be read is
    listed with status "unreadable" and the reason in "error" (None otherwise)."""
    base = Path(root)
    if not base.is_dir():
        raise RunNotFoundError(f"runs folder {base} does not exist or is not a directory")
    found: list[tuple[float, str, dict[str, Any]]] = []
    for child in base.iterdir():
        db = child / DB_NAME
        if not child.is_dir() or not db.is_file():
            continue
        try:
            with RunReader(child) as reader:
                m = reader.meta()
            row = {
                "name": child.name, "status": m.get("status"), "last_step": m.get("last_step"),
                "model": m.get("model"), "created": m.get("created"), "error": None,
            }  # fmt: skip
        except (RunStoreError, sqlite3.Error, OSError, ValueError) as exc:
            row = {
                "name": child.name, "status": "unreadable", "last_step": None, "model": None,
                "created": None, "error": f"{type(exc).__name__}: {exc}",
            }  # fmt: skip
        created = row["created"]
        key = float(created) if isinstance(created, int | float) else db.stat().st_mtime
        found.append((key, child.name, row))
    found.sort(key=lambda t: (-t[0], t[1]))
    return [row for _, _, row in found]
