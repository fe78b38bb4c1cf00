"""Run the dashboard with uvicorn: `serve(...)` in the foreground (Ctrl-C stops it cleanly) or
`DashboardServer` in a background thread (the demo, the browser tests).

    with DashboardServer(Path("runs"), ServeConfig(port=0)) as srv:   # port 0: a free port
        print(srv.url)                                                 # http://127.0.0.1:PORT/
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType

import uvicorn
from fastapi import FastAPI

from convscope.config import ServeConfig

from .app import create_app
from .state import AppState

GRACE_S = 3  # after this long at shutdown, open connections are cut


def new_token() -> str:
    """A fresh random token for a server bound beyond this machine."""
    return secrets.token_urlsafe(24)


class _Server(uvicorn.Server):
    """uvicorn's server that first ends the live streams, so shutdown does not wait on them."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.dash_state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.dash_state.stopping.set()
        super().handle_exit(sig, frame)


def _uvicorn(app: FastAPI, config: ServeConfig) -> _Server:
    cfg = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,  # keep it off: uvicorn logs the raw request line, ?token= and all
        timeout_graceful_shutdown=GRACE_S,
        lifespan="on",
    )
    return _Server(cfg, app.state.dash)


def url_of(config: ServeConfig, port: int) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    query = f"?token={config.token}" if config.token else ""
    return f"http://{host}:{port}/{query}"


SERVER_NICE = 10  # how far `convscope serve` / `demo` lower the dashboard process's CPU priority


def yield_to_training(niceness: int = SERVER_NICE) -> int:
    """Lower this process's CPU priority by `niceness` (POSIX nice), so that a trainer on the same
    machine does not wait for the dashboard when both want a core: the pages get what training
    leaves. For a process that only serves (`convscope serve`, `demo`'s dashboard side), never for
    a notebook kernel that also trains. Returns the niceness now (unchanged where nice is missing)."""
    try:
        return os.nice(max(niceness, 0))
    except (AttributeError, OSError):  # no os.nice (Windows), or not allowed
        return 0


def serve(runs_root: Path, config: ServeConfig) -> None:
    """Serve the dashboard over `runs_root` until Ctrl-C (blocking)."""
    server = _uvicorn(create_app(runs_root, config), config)
    server.run()


class DashboardServer:
    """The dashboard in a daemon thread; `url` once started; `stop()` (or `with`) ends it."""

    def __init__(
        self, runs_root: Path, config: ServeConfig, *, start_timeout_s: float = 10.0
    ) -> None:
        self.config = config
        self.app = create_app(runs_root, config)
        self._server = _uvicorn(self.app, config)
        self._thread = threading.Thread(
            target=self._server.run, name="convscope-dashboard", daemon=True
        )
        self._timeout = start_timeout_s
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the dashboard server is not started")
        return url_of(self.config, self.port)

    def start(self) -> DashboardServer:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the dashboard did not start on {self.config.host}:{self.config.port} "
                    "(port in use?)"
                )
            time.sleep(0.02)
        sockets = [s for srv in self._server.servers for s in (srv.sockets or ())]
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.config.port
        return self

    def stop(self) -> None:
        self.app.state.dash.stopping.set()
        self._server.should_exit = True
        self._thread.join(timeout=GRACE_S + 5)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
