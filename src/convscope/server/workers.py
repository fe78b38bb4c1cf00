"""Worker processes that answer requests for runs whose trainer has ended (DESIGN §3 "Analyses on
demand"): the server never runs a model, so a projection asked of a finished run starts
`python -m convscope answer --run DIR` (convscope/train/worker.py) in its own process.

    state.workers.ensure("exp1", run_dir)     # at most one per run; it exits when idle
    state.workers.stop_all()                  # on shutdown

The worker also ends by itself when its idle time passes or this server process dies.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

IDLE_S = 60  # a worker exits after this long without a request (convscope answer --idle)


class Workers:
    """One `convscope answer` process per run, started on demand."""

    def __init__(self, *, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def ensure(self, run: str, run_dir: Path) -> bool:
        """Start run's worker unless one is alive; True when this call started it."""
        with self._lock:
            proc = self._procs.get(run)
            if proc is not None and proc.poll() is None:
                return False
            cmd = [sys.executable, "-m", "convscope", "answer", "--run", str(run_dir), "--idle", str(self.idle_s)]
            self._procs[run] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            return True

    def alive(self, run: str) -> bool:
        with self._lock:
            proc = self._procs.get(run)
            return proc is not None and proc.poll() is None

    def stop_all(self, timeout_s: float = 5.0) -> None:
        """Ask every worker to stop (SIGTERM), then wait for them."""
        with self._lock:
            procs, self._procs = list(self._procs.values()), {}
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
