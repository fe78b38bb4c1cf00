"""`convscope demo` end to end: trainer in a child process, dashboard served on 127.0.0.1, and a
Ctrl-C that stops both with the run kept on disk as "stopped"."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from convscope.runs import RunReader


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_demo_serves_the_dashboard_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convscope", "demo", "--no-browser", "--port", str(port),
         "--runs", str(tmp_path / "runs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if line.startswith("dashboard: "):
                url = line.split()[1]
        assert url is not None and url.startswith(f"http://127.0.0.1:{port}/?run=demo-")
        run_name = url.split("run=")[1]
        body = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=5) as resp:
                    body = json.loads(resp.read())
                if body["runs"] and (body["runs"][0]["last_step"] or 0) >= 3:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert body is not None and body["runs"][0]["name"] == run_name
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200 and "text/html" in resp.headers["content-type"]
        proc.send_signal(stop)  # the user's Ctrl-C, or a `kill`
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "run kept:" in out
    meta = RunReader(tmp_path / "runs" / run_name).meta()
    assert meta["status"] == "stopped" and meta["last_step"] >= 3
