"""convscope.runs: the run store between the training side and the serving side
(docs/run-store.md). `RunWriter` records a run, `RunReader` reads it from any process,
`list_runs` lists a folder of runs, `Retention` bounds the snapshots a run keeps."""

from convscope.runs.retention import Retention, thin_steps
from convscope.runs.store import (
    SCHEMA_VERSION,
    Control,
    RunBusyError,
    RunCorruptError,
    RunExistsError,
    RunNotFoundError,
    RunReader,
    RunSchemaError,
    RunStoreError,
    RunWriter,
    list_runs,
)

__all__ = [
    "SCHEMA_VERSION",
    "Control",
    "Retention",
    "RunBusyError",
    "RunCorruptError",
    "RunExistsError",
    "RunNotFoundError",
    "RunReader",
    "RunSchemaError",
    "RunStoreError",
    "RunWriter",
    "list_runs",
    "thin_steps",
]
