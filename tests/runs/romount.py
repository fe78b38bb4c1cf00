"""Run Python code with a directory mounted read-only, as a finished run on a read-only mount is
seen (importable as `runs.romount`: pytest puts tests/ on sys.path).

The tests run as root, for whom `chmod -w` stops nothing; a read-only *mount* stops root too. So
the code runs in a child process inside its own user and mount namespaces (`unshare -rm`, no
privileges needed beyond the kernel allowing user namespaces), where `directory` is bind-mounted
onto itself and remounted read-only: SQLite there gets EROFS exactly as on a real read-only
mount, and nothing outside the child sees the mount.

    out = on_read_only_mount(root, "print(open(...).read())")   # CompletedProcess, text
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def on_read_only_mount(directory: Path, code: str, timeout_s: float = 120.0) -> str:
    """stdout of `python -c code` run with `directory` read-only (fails the test on error)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux's unshare to make a read-only mount")
    d = shlex.quote(str(directory))
    script = (
        f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && "
        f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    )
    probe = subprocess.run(
        [unshare, "-rm", "sh", "-c", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not allowed here: {probe.stderr.strip()}")
    done = subprocess.run(
        [unshare, "-rm", "sh", "-c", script],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
