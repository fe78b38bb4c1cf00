"""`convscope evolution` with only --out: the built-in trainer first trains zoo:convnetjs-cifar into
OUT/run (here a few steps), the report follows that run; a later call reuses a finished run, and a
folder in the way (not a run, or a run not finished) is one line, left as it was."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from convscope import cli
from convscope.cli import analyses
from convscope.runs import RunReader


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["convscope", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def test_only_out_trains_the_default_run_then_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(analyses, "EVOLUTION_STEPS", 5)
    out = tmp_path / "o"
    code, printed, err = _cli(monkeypatch, capsys, "evolution", "--out", str(out))
    assert code == 0, err
    run = out / "run"
    assert printed.splitlines() == [
        f"no --run: training zoo:convnetjs-cifar on builtin:photo-crops for 5 steps into {run}",
        f"report: {(out / 'index.html').resolve()}",
    ]
    with RunReader(run) as reader:
        meta = reader.meta()
    assert meta["status"] == "finished" and meta["model"] == "zoo:convnetjs-cifar"
    summary = json.loads((out / "evolution.json").read_text())
    assert summary["layer"] == "conv3" and len(summary["maps"]) == 8
    steps = [c["steps"] for c in summary["maps"][0]["cells"]]
    assert steps == [1, 2, 5]  # evo-000001, -000002, -000005
    code, printed, err = _cli(monkeypatch, capsys, "evolution", "--out", str(out), "--top", "2")
    assert code == 0, err
    assert printed.splitlines()[0] == f"following {run}, trained by an earlier call (delete it to train anew)"
    assert len(json.loads((out / "evolution.json").read_text())["maps"]) == 2


def test_a_folder_in_the_way_is_one_line_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    (out / "run").mkdir(parents=True)
    (out / "run" / "mine.txt").write_text("keep me")
    code, printed, err = _cli(monkeypatch, capsys, "evolution", "--out", str(out))
    assert code == 2 and printed == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out / 'run'} is in the way of the default run"), err
    assert [p.name for p in (out / "run").iterdir()] == ["mine.txt"]
    assert not (out / "index.html").exists()
