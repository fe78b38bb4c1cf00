"""RunWriter: the training side of the run store (docs/run-store.md).

    w = RunWriter("runs/exp1", config={"lr": 0.01}, meta={"model": "zoo:convnetjs-cifar"})
    w.log_scalars(12, {"loss": 2.3}); w.log_layer_stats(12, "conv1", {"a_mean": 0.4})
    w.log_snapshot(12, "conv1", "a", a[:1]); w.commit(12)    # a whole step, handed over at once
    w.flush()                                                # waits until it is in run.sqlite
    w.close(status="finished")

Logged values are checked (and snapshots copied) in the caller's thread; `commit(step)` hands the
step to the writer thread (committer.py), which compresses the snapshots and writes every step
committed in the last 0.25 s in one transaction: a reader never sees half a step, and `kill -9`
loses at most the last ~0.25 s. `flush()` and `close()` wait for the writer thread. `ack_control`
and `save_checkpoint` flush first and write at once (a paused trainer must still answer, and a
control is never answered before the step holding its answer). Retention and the byte budget
(pruning.py) are applied inside those transactions.

- Steps never decrease: logging or committing a step below the last committed one is an error;
  committing the same step again is allowed (it adds to / replaces that step's rows).
- `close()` commits what was logged but not committed when status is "finished"; "stopped" and
  "crashed" drop it (a reader never sees half a step).
- Deleted snapshot rows' pages are reused by SQLite; the file is never VACUUMed (it stays at its
  high-water mark, which the budget bounds).
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import threading
import time
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from convscope.runs import checkpoints, controls
from convscope.runs.codec import prepare
from convscope.runs.committer import Batch, Committer
from convscope.runs.mounts import check_local
from convscope.runs.pruning import Pruner
from convscope.runs.retention import Retention
from convscope.runs.schema import (
    CHECKPOINT_DIR,
    CLOSE_STATUSES,
    DB_NAME,
    Control,
    RunExistsError,
    check_schema,
    connect_rw,
    create_database,
    lock_run,
    start_run,
    unlock_run,
)  # fmt: skip
from convscope.runs.values import (
    check_checkpoint_name,
    check_meta_key,
    check_name,
    check_number,
    check_step,
    dumps,
    json_mapping,
)  # fmt: skip

HEARTBEAT_S = 1.0  # poll_controls refreshes meta "updated" at most this often between commits
WRITE_EVERY_S = 0.25  # one transaction per this many seconds while steps keep coming
BUDGET_KEY = "run_budget_bytes"  # a config key (TrainConfig's field) that sets the byte budget


class RunWriter:
    """The training side: buffers one step's writes; `commit` hands the step to the writer thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        config: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        retention: Retention | None = None,
        resume: bool = False,
        write_every: float = WRITE_EVERY_S,
        background: bool = True,
    ) -> None:
        if retention is not None and not isinstance(retention, Retention):
            raise TypeError(f"retention must be a Retention, got {type(retention).__name__}")
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be a bool, got {type(resume).__name__}")
        if (
            isinstance(write_every, bool)
            or not isinstance(write_every, int | float)
            or not 0 <= write_every <= 3600
        ):
            raise ValueError(f"write_every must be between 0 and 3600 seconds, got {write_every!r}")
        config_rows = json_mapping("config", config or {})
        meta_rows = json_mapping("meta", meta or {})
        for key in meta_rows:
            check_meta_key(key)
        given = _budget_of(config or {})  # checked before anything touches the disk
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"run directory {self.path} is a file")
        check_local(self.path)  # SQLite's WAL needs one host: no network file system
        self._db = self.path / DB_NAME
        if self._db.exists() and not resume:
            raise RunExistsError(
                f"{self.path} already holds a run; pass resume=True to continue it, or pick a new directory"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_run(self.path)
        self._lock = threading.RLock()
        self._pending = Batch()
        # log_scalars_later: (step, scalars) not yet in `_pending`; every call that reads or adds
        # to it takes them first, in order (a deque: appended without the lock, taken under it)
        self._later: collections.deque[tuple[int, dict[str, float]]] = collections.deque()
        self._closed = False
        try:
            if self._db.exists():
                if not resume:  # created by someone else since the check above
                    raise RunExistsError(
                        f"{self.path} already holds a run; pass resume=True to continue it"
                    )
                self._conn = connect_rw(self._db)
                check_schema(self._conn, self._db)
            else:
                create_database(self.path, config_rows, meta_rows)
                self._conn = connect_rw(self._db)
            self._last_step = self._meta_value("last_step")
            stored = self._meta_value("budget_bytes")
            self.retention = retention or Retention(
                budget_bytes=given or stored or Retention().budget_bytes
            )
            self._heartbeat = time.time()
            status = {
                "status": "running",
                "updated": self._heartbeat,
                "budget_bytes": self.retention.budget_bytes,
            }
            start_run(
                self._conn,
                meta_rows | {k: json.dumps(v) for k, v in status.items()},
                config_rows if resume else {},
            )
            pruner = Pruner(self.retention)
            self._committer = Committer(
                self._db, pruner, every=float(write_every), background=background, last_step=self._last_step
            )  # fmt: skip
        except BaseException:
            if hasattr(self, "_conn"):
                self._conn.close()
            unlock_run(self._lock_fd)
            raise
        # a writer dropped without close(): its queue is still written, the lock released
        self._finalizer = weakref.finalize(
            self, _abandon, self._committer, self._conn, self._lock_fd, os.getpid()
        )

    def _meta_value(self, key: str) -> int | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        value = json.loads(row[0]) if row else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    # -- logging (buffered until commit) ------------------------------------------------------
    @property
    def last_step(self) -> int | None:
        """The last committed step (None before the first commit)."""
        return self._last_step

    @property
    def written_step(self) -> int | None:
        """The last step the writer thread has written to run.sqlite (what survives `kill -9`)."""
        return self._committer.db_step

    @property
    def txn_seconds(self) -> list[float]:
        """Seconds each of the writer thread's last (up to 10,000) transactions took."""
        return list(self._committer.txn_seconds)

    @property
    def background_cpu_s(self) -> float:
        """CPU seconds the writer thread has used so far, read live from its CPU clock where the
        platform has one (0 when it writes inline)."""
        return self._committer.cpu_now()

    @property
    def background_cpu_split(self) -> tuple[float, float]:
        """(`background_cpu_s`, the part of it spent on transactions holding snapshots)."""
        return self._committer.cpu_split()

    def picture_costs(self) -> list[tuple[float, int]]:
        """(CPU seconds, snapshots) of each transaction holding snapshots since the last call
        (the writer thread's; none when it writes inline): what compressing and storing pictures costs."""
        costs = self._committer.picture_costs
        return [costs.popleft() for _ in range(len(costs))]

    def _open_step(self, step: object) -> int:
        if self._later:
            self._take_later()
        s = check_step(step)
        self._check_open()
        below = self._below_committed(s)
        if below is not None:
            raise below
        return s

    def _below_committed(self, step: int) -> ValueError | None:
        """The error for a step below the last committed one (None: not below)."""
        if self._last_step is None or step >= self._last_step:
            return None
        return ValueError(
            f"step {step} is before the last committed step {self._last_step}; steps must not decrease"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the RunWriter of {self.path} is closed")

    def log_scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Scalars of `step` (name -> number; NaN/Inf are kept, they are information)."""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"log_scalars needs a mapping name -> number, got {type(values).__name__}"
            )
        rows = {
            (k if type(k) is str and k else check_name("scalar name", k)): v
            if type(v) is float
            else check_number(f"scalar {k!r}", v)
            for k, v in values.items()
        }  # (plain floats and names skip the calls: this runs every step)
        with self._lock:
            s = self._open_step(step)
            for name, value in rows.items():
                self._pending.scalars[(name, s)] = value
            self._pending.note(s)

    def log_scalars_later(self, step: int, values: dict[str, float]) -> None:
        """`log_scalars(step, values)` for a caller that has checked them (names non-empty strings,
        values floats, `step` an int not below any it logged before; the dict is not changed
        afterwards): the rows join the step data at the writer's next call, in order, as every
        call that reads or adds to it takes them first (from any thread), in the order of the
        calls. No lock and no checks here: a recorder's step that coasts (train/watch.py) runs
        right after a training step has evicted the writer's objects from the CPU caches, where
        `log_scalars` cost ~30 µs; an append costs ~1 µs. Unlike `log_scalars`, a step below the
        last committed one is refused by the writer's next call (its row dropped, the others
        taken). A closed writer refuses them here, also one closed by another thread meanwhile."""
        self._later.append((step, values))
        if self._closed:  # (checked after the append: a close() that ran meanwhile did not take it)
            with self._lock:
                self._later.clear()  # never to be written: said here, not dropped unsaid
                self._check_open()

    def _take_later(self) -> None:
        """Move the rows of `log_scalars_later` into the pending step data (the lock held). A row
        below the last committed step is dropped and, once every other row is taken, refused."""
        later, pending, refused = self._later, self._pending, None
        while later:
            step, values = later.popleft()
            below = self._below_committed(step)
            if below is not None:
                refused = refused or below
                continue
            for name, value in values.items():
                pending.scalars[(name, step)] = value
            pending.note(step)
        if refused is not None:
            raise refused

    def log_layer_stats(self, step: int, layer: str, stats: Mapping[str, Any]) -> None:
        """Per-layer statistics of `step` (name -> number); merged with earlier ones of the step."""
        check_name("layer", layer)
        if not isinstance(stats, Mapping):
            raise TypeError(
                f"log_layer_stats needs a mapping name -> number, got {type(stats).__name__}"
            )
        rows = {}
        for k, v in stats.items():
            if k in ("step", "layer") or not isinstance(k, str) or not k:
                check_name("stat name", k)
                raise ValueError(
                    f"stat name {k!r} is reserved (the reader adds 'step' and 'layer')"
                )
            rows[k] = v if type(v) is float else check_number(f"layer stat {layer}.{k}", v)
        with self._lock:
            s = self._open_step(step)
            self._pending.stats.setdefault((layer, s), {}).update(rows)
            self._pending.note(s)

    def log_snapshot(
        self, step: int, layer: str, kind: str, tensor: torch.Tensor | np.ndarray
    ) -> None:
        """A tensor of `step`: checked and copied now, compressed by the writer thread (float16
        if lossless enough, else float32; see codec.py)."""
        check_name("layer", layer)
        check_name("kind", kind)
        copy = prepare(tensor)
        with self._lock:
            s = self._open_step(step)
            self._pending.snapshots[(layer, kind, s)] = copy
            self._pending.note(s)

    def log_json(self, step: int, key: str, value: Any) -> None:
        """Any JSON value under `key` for `step`."""
        text = dumps(f"json {key!r}", value)
        check_name("json key", key)
        with self._lock:
            s = self._open_step(step)
            self._pending.json[(key, s)] = text
            self._pending.note(s)

    def set_meta(self, key: str, value: Any) -> None:
        """Run-level key -> JSON value (overwrites); written with the next commit (or close)."""
        check_meta_key(key)
        text = dumps(f"meta {key!r}", value)
        with self._lock:
            self._check_open()
            self._pending.meta[key] = text

    # -- commit -------------------------------------------------------------------------------
    def commit(self, step: int) -> None:
        """Hand everything logged since the last commit to the writer thread as one step and set
        last_step. Raises the error of a failed earlier transaction (then this step stays
        buffered: commit can be retried)."""
        with self._lock:
            s = self._open_step(step)
            if self._pending.max_step is not None and s < self._pending.max_step:
                raise ValueError(
                    f"commit({s}) but data was logged for step {self._pending.max_step}"
                )
            self._committer.raise_error()
            self._hand_over(s)

    def _hand_over(self, step: int | None, extra_meta: Mapping[str, str] | None = None) -> None:
        batch, now = self._pending, time.time()
        batch.step, batch.time = step, now
        batch.meta.update(extra_meta or {})
        self._committer.submit(batch)  # inline (background=False) it writes now, or raises
        self._pending = Batch()
        if step is not None:
            self._last_step = step if self._last_step is None else max(self._last_step, step)
        self._heartbeat = now

    def flush(self) -> None:
        """Wait until every committed step is in run.sqlite (raises a failed transaction's error)."""
        self._committer.sync()

    # -- controls -----------------------------------------------------------------------------
    def poll_controls(self) -> list[Control]:
        """Controls the dashboard sent that are not acknowledged yet, oldest first. Also refreshes
        the heartbeat (meta "updated") when the last one is older than HEARTBEAT_S."""
        with self._lock:
            self._check_open()
            polled, unreadable = controls.pending(self._conn)
            now = time.time()
            if now - self._heartbeat >= HEARTBEAT_S:
                self._committer.submit(Batch(time=now))  # written by the writer thread
                self._heartbeat = now
        for i in unreadable:  # refused once, never handed to the trainer
            self.ack_control(i, self._last_step or 0, controls.UNREADABLE)
        return polled

    def ack_control(
        self, control_id: int, step: int, result: Mapping[str, Any] | None = None
    ) -> None:
        """Mark a control as applied at `step` with `result` (default {"ok": True}); written now,
        after every step committed before it (never "done" before the step holding its answer)."""
        if isinstance(control_id, bool) or not isinstance(control_id, int):
            raise TypeError(f"control id must be an int, got {type(control_id).__name__}")
        s = check_step(step)
        if result is not None and not isinstance(result, Mapping):
            raise TypeError(
                f"result must be a mapping like {{'ok': True}}, got {type(result).__name__}"
            )
        text = dumps("control result", {"ok": True} if result is None else dict(result))
        with self._lock:
            self._check_open()
            self._committer.sync()
            controls.acknowledge(self._conn, control_id, step=s, result_text=text, now=time.time())

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint_path(self, name: str) -> Path:
        """Where checkpoint `name` lives: checkpoints/NAME.safetensors (name validated)."""
        return self.path / CHECKPOINT_DIR / f"{check_checkpoint_name(name)}.safetensors"

    def save_checkpoint(
        self,
        state_dict: Mapping[str, torch.Tensor],
        name: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Write `state_dict` to checkpoints/NAME.safetensors atomically (temp file, fsync,
        rename) and record it (table checkpoints, meta "last_checkpoint"); returns the path.
        `metadata` (str → str) goes into the file beside `convscope_step`, so the checkpoint
        describes itself (model, input_shape, mean, std, classes: what `load_model` reads)."""
        extra = checkpoints.check_metadata(metadata)
        final = self.checkpoint_path(name)
        tensors = checkpoints.state_tensors(state_dict)
        with self._lock:
            self._check_open()
            self._take_later()
            step = max(
                (s for s in (self._last_step, self._pending.max_step) if s is not None),
                default=None,
            )
            size = checkpoints.save_atomic(
                tensors, final, {**extra, "convscope_step": str(step), "step": str(step)}
            )
            self._committer.sync()
            checkpoints.record(self._conn, name, f"{CHECKPOINT_DIR}/{final.name}", step, size)
        return final

    def load_checkpoint(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of checkpoint `name` (for the trainer's `load_checkpoint` control)."""
        return checkpoints.load(self.checkpoint_path(name), name)

    # -- closing ------------------------------------------------------------------------------
    def close(self, status: str = "finished") -> None:
        """Set the final status, wait for the writer thread and release the run (idempotent).
        With status "finished", writes logged but not committed are committed as the last step;
        otherwise such an interrupted step is dropped (a reader never sees half a step)."""
        if status not in CLOSE_STATUSES:
            raise ValueError(f"status must be one of {list(CLOSE_STATUSES)}, got {status!r}")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._finalizer.detach()
            refused = None
            try:
                step = None
                try:
                    self._take_later()
                except ValueError as err:  # a row below the last step: the run still closes
                    refused = err
                if status == "finished" and self._pending.has_step_data():
                    step = self._pending.max_step
                else:
                    self._pending = Batch(meta=self._pending.meta)
                self._hand_over(step, {"status": json.dumps(status)})
            finally:
                try:
                    self._committer.close()
                finally:
                    self._conn.close()
                    unlock_run(self._lock_fd)
            if refused is not None:
                raise refused

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(ending(exc_type))


def ending(exc_type: type[BaseException] | None) -> str:
    """The status a run closes with when the block recording it ends: normally "finished", on
    Ctrl-C "stopped", on any other exception "crashed"."""
    if exc_type is None:
        return "finished"
    return "stopped" if issubclass(exc_type, KeyboardInterrupt) else "crashed"


def _budget_of(config: Mapping[str, Any]) -> int | None:
    """The byte budget a run's config asks for (key `run_budget_bytes`), checked; None if absent."""
    value = config.get(BUDGET_KEY) if isinstance(config, Mapping) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"config[{BUDGET_KEY!r}] must be an int number of bytes, got {value!r}")
    return Retention(budget_bytes=value).budget_bytes  # range-checked there


def _abandon(committer: Committer, conn: sqlite3.Connection, lock_fd: int | None, pid: int) -> None:
    """A RunWriter garbage-collected (or alive at exit) without close(): write its queue, release."""
    if os.getpid() != pid:  # a forked child holds a copy: the writer thread is not its own
        return
    try:
        committer.close()
    except Exception as exc:  # nobody is left to raise to: say it; the run shows as not responding
        warnings.warn(
            f"convscope: a RunWriter left without close() lost its last steps: {exc}", stacklevel=1
        )
    finally:
        conn.close()
        unlock_run(lock_fd)
