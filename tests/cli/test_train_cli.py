"""`convscope train` in a terminal: one line when the loss first turns non-finite (issue 7)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from convscope.runs import RunReader


def test_train_says_once_when_the_loss_turns_non_finite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "convscope", "train", "--run", str(run), "--steps", "30", "--lr", "10",
         "--train-size", "256", "--batch-size", "16"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    losses = RunReader(run).scalars(names=["loss"])["loss"]
    first, value = next((s, v) for s, v in losses if not math.isfinite(v))
    assert sum(1 for _, v in losses if not math.isfinite(v)) >= 2  # it stayed non-finite: still one line
    assert done.stderr.splitlines() == [
        f"warning: step {first}: the loss is {value} (not finite); training goes on but the weights are "
        "ruined: try a smaller learning rate (now 10) or load a checkpoint"
    ]
    assert done.stdout.splitlines() == [f"training zoo:convnetjs-cifar on builtin:photo-crops into {run}"]


def test_train_refuses_an_import_path_in_one_line(tmp_path: Path) -> None:
    """Issue 7 case 1 from the command line: the built-in trainer takes zoo nets and layer specs only."""
    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n")
    done = subprocess.run(
        [sys.executable, "-m", "convscope", "train", "--run", str(tmp_path / "run"), "--model", f"{evil}:Net"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and not marker.exists()
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: model '{evil}:Net' is not a choice of the built-in trainer: a zoo net (")
