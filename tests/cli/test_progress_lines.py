"""Long jobs show their progress also where no bar can be drawn (stderr a file or a pipe: a CI log,
`2> log`): a plain line every cli.app.LINE_EVERY_S seconds (the bar is drawn only on a terminal)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convscope.cli import app

app_module = importlib.import_module("convscope.cli.app")  # (`convscope.cli.app` the attribute is the Typer app)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_with_count_share_and_time_left(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    lines = app_module._Lines("occluding", "positions", clock=clock, every=10.0)
    lines(10, 500)  # at once: nothing (a short job prints no line)
    clock.now = 109.9
    lines(100, 500)
    assert capsys.readouterr().err == ""
    clock.now = 112.0
    lines(120, 500)  # 12 s for 120: 380 more take 38 s
    clock.now = 115.0
    lines(150, 500)  # 3 s after the last line: nothing
    clock.now = 122.0
    lines(40, 500)  # counting again (a pass started over): the time left is reckoned from here on
    clock.now = 132.0
    lines(140, 500)  # 10 s for 100: 360 more take 36 s
    clock.now = 133.0
    lines(0, None, description="second pass")  # a new phase: said at once, with no total known
    clock.now = 135.0
    lines(60, None)
    clock.now = 143.0
    lines(500, 500)
    assert capsys.readouterr().err.splitlines() == [
        "occluding: 120/500 positions (24%), ~38 s left",
        "occluding: 40/500 positions (8%)",
        "occluding: 140/500 positions (28%), ~36 s left",
        "second pass: 0 positions",
        "second pass: 500/500 positions (100%), ~0 s left",
    ]


def test_a_command_whose_stderr_is_no_terminal_prints_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "LINE_EVERY_S", 0.0)  # a line on every update
    monkeypatch.setattr(app_module.console, "_force_terminal", False)  # (whatever FORCE_COLOR or TTY_COMPATIBLE say)
    res = CliRunner().invoke(app, ["diagnose", "--model", "zoo:convnetjs-mnist", "--data", "builtin:digits:val",
                                   "--limit", "64", "--batch-size", "16", "--out", str(tmp_path / "d")])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = [line for line in res.stderr.splitlines() if line.startswith("diagnosing: ")]
    assert [re.sub(r", ~\d+ s left$", "", line) for line in got] == [
        f"diagnosing: {n}/64 inputs ({100 * n // 64}%)" for n in (16, 32, 48, 64)
    ]
    assert (tmp_path / "d" / "diagnosis.json").is_file()
