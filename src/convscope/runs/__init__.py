"""convscope.runs: the run store between the training side and the serving side
(docs/run-store.md). `RunWriter` records a run, `RunReader` reads it from any process,
`list_runs` lists a folder of runs, `Retention` bounds the snapshots a run keeps (a cap per
series and a byte budget, 1 GB by default)."""

from convscope.runs.retention import DEFAULT_BUDGET, Retention, thin_steps
from convscope.runs.store import (
    SCHEMA_VERSION,
    Control,
    RunBusyError,
    RunCorruptError,
    RunExistsError,
    RunNotFoundError,
    RunReader,
    RunReadOnlyError,
    RunSchemaError,
    RunStoreError,
    RunWriter,
    list_runs,
)

__all__ = [
    "DEFAULT_BUDGET",
    "SCHEMA_VERSION",
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
    "thin_steps",
]
