"""The live dashboard inside a Jupyter notebook: `cs.show(run_dir)` or `run.show()`.

    run = cs.watch(model, "runs/exp1")
    run.show()                      # the dashboard of this run, in the cell's output
    for x, y in loader:             # ... the user's loop, in the same kernel
        ...; run.step(loss=loss)

`show` starts the dashboard server (convscope.server) in a daemon thread of the kernel, on a
free loopback port (127.0.0.1 only), with a fresh token, and returns a `NotebookDashboard`
whose notebook display is an <iframe> of it. The server is the CLI's with one difference
(`ServeConfig.embed`): its CSP lets pages of this machine (the notebook) frame it —
`frame-ancestors 'self' http://localhost:* http://127.0.0.1:*` — where the CLI's says 'none'.
Host check, token (exchanged for an HttpOnly SameSite=Strict cookie) and Origin check are the
same. The iframe names the host the notebook page itself was opened at (localhost or
127.0.0.1), so the cookie is same-site; without script (an untrusted notebook) it is
`localhost`, Jupyter's default link. The training loop and the server meet only in the run
store, as everywhere: the loop writes, the server reads.

The server runs until `.stop()` or the kernel ends (a daemon thread); `run.show()` starts one
per recorder and shows it again on the next call.
"""

from __future__ import annotations

import html
import json
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any

from convscope.config import ServeConfig
from convscope.runs.store import DB_NAME
from convscope.server.serve import DashboardServer, new_token
from convscope.train.watch import Recorder

HOSTS = ("localhost", "127.0.0.1")  # what the iframe may name: the loopback names a CSP can list
HEIGHT = 900  # px: the iframe's default height (the page's header, charts and a layer card)


class NotebookDashboard:
    """A dashboard server in a background thread, shown as an <iframe> in a notebook."""

    def __init__(self, run_dir: str | Path, *, height: int = HEIGHT, host: str = "localhost") -> None:
        path = Path(run_dir)
        self.run: str | None
        if host not in HOSTS:
            raise ValueError(f"host must be one of {', '.join(HOSTS)} (the server listens on 127.0.0.1), got {host!r}")
        if isinstance(height, bool) or not isinstance(height, int) or not 100 <= height <= 5000:
            raise ValueError(f"height must be an int from 100 to 5000 pixels, got {height!r}")
        if not path.is_dir():
            raise ValueError(f"{path} is not a directory: give a run directory (runs/exp1) or a folder of runs")
        if (path / DB_NAME).exists():  # one run: serve its parent, open the page on it
            root, self.run = path.resolve().parent, path.resolve().name
        else:
            root, self.run = path, None
        self.height, self.host = height, host
        self.config = ServeConfig(host="127.0.0.1", port=0, token=new_token(), embed=True)
        self._server = DashboardServer(root, self.config).start()
        self.port: int = self._server.port or 0

    @property
    def url(self) -> str:
        """The page's address with the token (the page drops it from its address bar)."""
        return self.url_at(self.host)

    def url_at(self, host: str) -> str:
        frag = f"#run={self.run}" if self.run else ""
        return f"http://{host}:{self.port}/?token={self.config.token}{frag}"

    @property
    def running(self) -> bool:
        return self._server.port is not None and self._server._thread.is_alive()

    def stop(self) -> None:
        """End the server (the iframe then shows the browser's "cannot connect")."""
        self._server.stop()

    def __enter__(self) -> NotebookDashboard:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"NotebookDashboard({self.run or 'all runs'!r}, port {self.port}, {state})"

    def _repr_html_(self) -> str:
        ident = f"convscope-{secrets.token_hex(6)}"
        # the page asks again with the notebook's own loopback name, so its token cookie is same-site:
        # in a new iframe that replaces this one. Changing this one's `src` left it on the first,
        # cross-site page in two full test runs on a loaded machine (its requests then carried no
        # cookie: 401); removing the element ends its navigation, whatever state it is in.
        script = (
            f"(function(){{var f=document.getElementById({json.dumps(ident)});var h=location.hostname;"
            f"if(f&&h!=={json.dumps(self.host)}&&{json.dumps(list(HOSTS))}.indexOf(h)>=0)"
            "{var u=new URL(f.src);u.hostname=h;var g=f.cloneNode(false);g.src=u.href;f.replaceWith(g);}})();"
        )
        return (
            f'<iframe id="{ident}" src="{html.escape(self.url)}" width="100%" height="{self.height}" '
            'style="border:1px solid #d1d5db;border-radius:4px" title="convscope dashboard"></iframe>'
            f"<script>{script}</script>"
            f"<p style='font-size:12px;color:#555'>convscope dashboard of {html.escape(self.run or 'all runs')}"
            f" on port {self.port} (this kernel; <code>.stop()</code> ends it).</p>"
        )


def show(run_dir: str | Path, *, height: int = HEIGHT, host: str = "localhost") -> NotebookDashboard:
    """The live dashboard of `run_dir` (a run, or a folder of runs) in a notebook cell: starts a
    token-guarded loopback server in a background thread and returns it; a notebook displays it
    as an iframe. `host`: the loopback name the iframe uses without script ("localhost", Jupyter's
    default link, or "127.0.0.1")."""
    return NotebookDashboard(run_dir, height=height, host=host)


def _show_run(run_dir: Path, **kwargs: Any) -> NotebookDashboard:
    return show(run_dir, **kwargs)


Recorder.dashboard = _show_run
