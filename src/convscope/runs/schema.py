"""The run store on disk: the SQLite schema, its errors, and the few SQLite mechanics both sides share
(bounded retries on a locked database, one write transaction, the schema check, the writer's lock).

    create_database(directory, config_rows, meta_rows)   # a complete run.sqlite appears atomically
    conn = connect_rw(db)                                # the writer's connections (WAL, NORMAL)
    check_schema(conn, db)                               # RunCorruptError / RunSchemaError
    retry(lambda: write_txn(conn, body), "commit")       # BEGIN IMMEDIATE ... COMMIT, retried on BUSY

`synchronous=NORMAL`: in WAL mode a commit is durable against a process crash (`kill -9`) and the
database is never corrupted; only an OS crash or power cut can roll back the last few commits. FULL
would fsync the WAL at every transaction for a guarantee a live training view does not need.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

if sys.platform != "win32":
    import fcntl

SCHEMA_VERSION = 1  # bump on any incompatible change to the tables below
DB_NAME = "run.sqlite"
CHECKPOINT_DIR = "checkpoints"
LOCK_NAME = ".writer.lock"  # flock'ed by the one live RunWriter of a run
PAGE_SIZE = 16384  # bytes per database page (see create_database)
BUSY_TIMEOUT_S = 2.0  # SQLite's busy handler waits this long for a lock, per statement
RETRY_S = 10.0  # whole transactions are retried on SQLITE_BUSY until this bound, then RunBusyError
WAL_LIMIT = 64 * 2**20  # a grown -wal file is truncated back to this after a checkpoint
CLOSE_STATUSES = ("finished", "stopped", "crashed")
# meta keys the store sets itself (a caller's set_meta of one of them is refused)
RESERVED_META = ("schema_version", "created", "updated", "last_step", "budget_bytes", "thinned")

SCHEMA = """
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


# ---- SQLite mechanics -------------------------------------------------------------------------
def is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def retry(op: Callable[[], T], what: str, bound_s: float = RETRY_S) -> T:
    """op(), retried while SQLite reports BUSY/LOCKED, for at most `bound_s` seconds."""
    deadline = time.monotonic() + bound_s
    delay = 0.002
    while True:
        try:
            return op()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            if time.monotonic() >= deadline:
                raise RunBusyError(f"{what}: run.sqlite stayed locked for {bound_s:g} s") from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def write_txn(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
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


def cannot_write(exc: BaseException | None) -> bool:
    """SQLite said it cannot open or write the file (SQLITE_CANTOPEN / SQLITE_READONLY)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
    )


def db_uri(db: Path, mode: str) -> str:
    return f"{db.resolve().as_uri()}?mode={mode}"


def connect_rw(db: Path) -> sqlite3.Connection:
    """A writer's connection (autocommit: transactions are explicit)."""
    conn = sqlite3.connect(
        db_uri(db, "rw"), uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
        check_same_thread=False,
    )  # fmt: skip
    conn.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
    return conn


def bound_wal(conn: sqlite3.Connection, budget: int) -> None:
    """Keep the -wal file beside run.sqlite to about 1/16 of the byte budget (at most 16 MiB
    between checkpoints with the 1 GB default; SQLite checkpoints every N pages written)."""
    pages = max(16, min(1000, budget // PAGE_SIZE // 16))
    conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
    conn.execute(f"PRAGMA journal_size_limit={min(WAL_LIMIT, pages * PAGE_SIZE)}")


def check_schema(conn: sqlite3.Connection, db: Path) -> None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
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


def create_database(
    directory: Path, config_rows: dict[str, str], meta_rows: dict[str, str]
) -> None:
    """Build the schema in a temporary file and rename it into place, so a reader sees either no
    run.sqlite or a complete one."""
    tmp = directory / f".{DB_NAME}.tmp-{os.getpid()}"
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
        for statement in SCHEMA.split(";"):
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
    os.replace(tmp, directory / DB_NAME)
    fsync_dir(directory)


def start_run(
    conn: sqlite3.Connection, meta_rows: dict[str, str], config_rows: dict[str, str]
) -> None:
    """A writer opens the run: meta keys set (status, heartbeat, ...), and on resume the given
    config keys overwrite theirs (the others stay)."""

    def body(c: sqlite3.Connection) -> None:
        c.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta_rows.items())
        if config_rows:
            (pos,) = c.execute("SELECT COALESCE(MAX(pos), -1) FROM config").fetchone()
            c.executemany(
                "INSERT INTO config (key, value, pos) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [(k, v, pos + 1 + i) for i, (k, v) in enumerate(config_rows.items())],
            )

    retry(lambda: write_txn(conn, body), "open run")


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (its file size minus the free pages it will reuse)."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)


# ---- the one-writer lock and directory fsync --------------------------------------------------
def lock_run(directory: Path) -> int | None:
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


def unlock_run(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def fsync_dir(directory: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
