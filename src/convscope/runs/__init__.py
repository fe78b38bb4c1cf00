"""convscope.runs: the run store between the training side and the serving side
(docs/run-store.md). `RunWriter` records a run, `RunReader` reads it from any process,
`list_runs` lists a folder of runs, `Retention` bounds the snapshots a run keeps (a cap per
series and a byte budget, 1 GB by default). The public names are gathered in store.py."""

from convscope.runs import store
from convscope.runs.retention import thin_steps
from convscope.runs.store import *  # noqa: F403 (store.__all__)

__all__ = [*store.__all__, "thin_steps"]
