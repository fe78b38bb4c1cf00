"""The run store: where the training side (RunWriter) and the serving side (RunReader) meet.

One directory per run: `run.sqlite` (SQLite in WAL mode: one writer, many readers, also from other
processes; committed steps survive `kill -9`) and `checkpoints/NAME.safetensors` beside it. The
contract is docs/run-store.md; in short:

    w = RunWriter("runs/exp1", config={"lr": 0.01}, meta={"model": "zoo:convnetjs-cifar"})
    w.log_scalars(12, {"loss": 2.3}); w.log_layer_stats(12, "conv1", {"a_mean": 0.4})
    w.log_snapshot(12, "conv1", "a", a[:1]); w.commit(12)    # a whole step; written within 0.25 s
    w.close(status="finished")

    r = RunReader("runs/exp1")                # read-only; from any process
    r.scalars(["loss"], since=10)             # {"loss": [(12, 2.3)]}
    r.snapshot("conv1", "a", step=20)         # (12, float32 tensor): newest at or before step 20

This module gathers the public names; each part has a file of its own:
schema.py (tables, errors, SQLite mechanics), values.py (input checks), codec.py (tensor bytes),
writer.py (RunWriter), committer.py (the writer thread), retention.py and pruning.py (the cap per
series and the byte budget), checkpoints.py (safetensors files), reader.py (RunReader, list_runs).
"""

from __future__ import annotations

from convscope.runs.reader import RunReader, list_runs
from convscope.runs.retention import DEFAULT_BUDGET, Retention
from convscope.runs.schema import (
    CHECKPOINT_DIR,
    CLOSE_STATUSES,
    DB_NAME,
    RESERVED_META,
    SCHEMA_VERSION,
    Control,
    RunBusyError,
    RunCorruptError,
    RunExistsError,
    RunNotFoundError,
    RunReadOnlyError,
    RunSchemaError,
    RunStoreError,
)
from convscope.runs.writer import BUDGET_KEY, HEARTBEAT_S, WRITE_EVERY_S, RunWriter

__all__ = [
    "BUDGET_KEY",
    "CHECKPOINT_DIR",
    "CLOSE_STATUSES",
    "DB_NAME",
    "DEFAULT_BUDGET",
    "HEARTBEAT_S",
    "RESERVED_META",
    "SCHEMA_VERSION",
    "WRITE_EVERY_S",
    "Control",
    "Retention",
    "RunBusyError",
    "RunCorruptError",
    "RunExistsError",
    "RunNotFoundError",
    "RunReadOnlyError",
    "RunReader",
    "RunSchemaError",
    "RunStoreError",
    "RunWriter",
    "list_runs",
]
