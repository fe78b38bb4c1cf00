"""Rank 0 under torchrun: when a rank dies, rank 0's failed collective starts closing the run as
"crashed" and torchrun's SIGTERM arrives while it closes. The signal must not cut the close short
(the run would read "running" forever); before the close it unwinds the trainer as before. Each case
runs in a fresh interpreter (signal handlers and atexit are process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from convscope.runs import RunReader

SRC = Path(__file__).parents[2] / "src"

PRELUDE = """
import os, signal, sys
import torch
import torch.distributed as dist
from torch import nn
from convscope.capture import count_hooks
from convscope.train.ddp import DDPRecorder
dist.init_process_group("gloo", init_method="file://" + sys.argv[1] + ".pg", rank=0, world_size=1)
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
before = {k: v.clone() for k, v in model.state_dict().items()}
rec = DDPRecorder(model, sys.argv[1], snapshot_every=0)
for _ in range(3):
    loss = model(torch.rand(2, 3, 8, 8)).sum()
    loss.backward()
    rec.step(loss=loss)
close = rec.writer.close
def term_then_close(*a, **k):
    os.kill(os.getpid(), signal.SIGTERM)  # torchrun stops the job while the run is closing
    return close(*a, **k)
rec.writer.close = term_then_close
"""


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p))
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)


def _status(tmp_path: Path) -> tuple[str, int | None]:
    with RunReader(tmp_path / "run") as r:
        return str(r.meta()["status"]), r.last_step()


def test_sigterm_during_a_crash_close_leaves_the_run_crashed(tmp_path: Path) -> None:
    done = _run(tmp_path, """
        rec.close("crashed")  # what step()'s failed collective does
        assert count_hooks(model) == 0
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is given back after the close
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
        print("closed")
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "closed"
    assert _status(tmp_path) == ("crashed", 2)


def test_sigterm_during_the_exit_close_leaves_the_run_crashed(tmp_path: Path) -> None:
    done = _run(tmp_path, """
        raise RuntimeError("gloo: connection closed by peer")  # uncaught: atexit closes the run
    """)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "connection closed by peer" in done.stderr
    assert _status(tmp_path) == ("crashed", 2)


def test_sigterm_before_the_close_still_unwinds_the_trainer(tmp_path: Path) -> None:
    done = _run(tmp_path, """
        rec.writer.close = close
        os.kill(os.getpid(), signal.SIGTERM)  # in the user's loop, between steps
        print("not reached")
    """)
    assert done.returncode == 128 + 15, done.stderr[-3000:]
    assert "not reached" not in done.stdout
    assert _status(tmp_path) == ("crashed", 2)
