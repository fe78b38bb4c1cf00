"""Bad options to `serve`, `demo` and `train` are checked before anything is printed, started or
created: one `error: ...` line naming the flag on stderr, exit code 2, nothing on stdout, no run
folder. A taken --port still gives way to a free one."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TOKEN = "error: --token must be at least 8 printable characters"
ALLOW = (
    "error: --allow-host: '*' is not a host name (give a name or address without scheme or port; "
    "an IPv6 address in square brackets)"
)
PORT = "error: --port 70000 is out of range 0..65535 (0: any free port)"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convscope", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def _refused(done: subprocess.CompletedProcess[str], line: str) -> None:
    assert (done.returncode, done.stdout, done.stderr.splitlines()) == (2, "", [line])


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--token", "x"], TOKEN),
        (["--host", "0.0.0.0", "--token", ""], TOKEN),
        (["--allow-host", "*"], ALLOW),
        (["--port", "70000"], PORT),
        (["--port", "-1"], "error: --port -1 is out of range 0..65535 (0: any free port)"),
        (["--host", "192.0.2.1", "--port", "8796"],  # TEST-NET-1: no address of this machine
         "error: --host 192.0.2.1 cannot be listened on (Cannot assign requested address): give an address "
         "of this machine, e.g. 127.0.0.1 or 0.0.0.0"),
    ],
)  # fmt: skip
def test_serve_checks_its_options_before_printing_a_url(tmp_path: Path, args: list[str], line: str) -> None:
    _refused(run_cli("serve", str(tmp_path), *args, cwd=tmp_path), line)


def test_serve_on_a_host_name_that_does_not_resolve_is_one_line(tmp_path: Path) -> None:
    done = run_cli("serve", str(tmp_path), "--host", "999.1.1.1", "--port", "8796", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: --host 999.1.1.1 cannot be listened on (")  # the resolver's words
    assert line.endswith("): give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--port", "70000"], PORT),
        (["--allow-host", "*"], ALLOW),
        (["--steps", "0"], "error: bad training setting(s): steps=0 (must be steps >= 1 (or None: until stopped))"),
    ],
)
def test_demo_checks_its_options_before_starting_a_run(tmp_path: Path, args: list[str], line: str) -> None:
    runs = tmp_path / "runs"
    done = run_cli("demo", "--no-browser", "--steps", "5", "--runs", str(runs), *args, cwd=tmp_path)
    _refused(done, line)
    assert not runs.exists()  # no demo-* run folder left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("budget", ["nan", "inf", "-inf", "-1", "1e305"])
def test_train_run_budget_must_be_a_finite_number(tmp_path: Path, budget: str) -> None:
    done = run_cli("train", "--run", str(tmp_path / "x"), "--run-budget-mb", budget, "--steps", "1", cwd=tmp_path)
    shown = f"{float(budget):g}"
    _refused(done, f"error: --run-budget-mb must be a finite number of MB in 1.048576..1e+12, got {shown}")
    assert not (tmp_path / "x").exists()


def test_serve_on_a_taken_port_chooses_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "convscope", "serve", str(tmp_path), "--port", str(taken)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("dashboard: http://127.0.0.1:") and f":{taken}/" not in line, line
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


@pytest.mark.parametrize(("command", "flag", "layers"), [
    ("units", "--layers", ","), ("units", "--layer", " , ,"), ("units", "--layers", ""),
    ("inspect", "--layer", ","), ("diagnose", "--layer", " , "),
])  # fmt: skip
def test_no_layer_named_is_refused_not_defaulted(tmp_path: Path, command: str, flag: str, layers: str) -> None:
    """`--layers ,` used to fall back silently to the default (last conv) layer."""
    done = run_cli(command, flag, layers, "--out", str(tmp_path / "u"), cwd=tmp_path)
    _refused(done, f"error: --layer needs layer names such as conv1 or conv1,conv2; got {layers!r}")
    assert not (tmp_path / "u").exists()


def test_layers_repeated_or_comma_separated_are_one_list() -> None:
    from convscope.cli.analyses import _layer_list

    assert _layer_list(None) is None
    assert _layer_list(["conv1"]) == ["conv1"]
    assert _layer_list(["conv1,conv2", " conv3 ", "layer1.0.conv1,"]) == ["conv1", "conv2", "conv3", "layer1.0.conv1"]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["inspect", "--norm", "x"], "--norm must be one of map, layer; got 'x'"),
        (["occlusion", "--window", "0"], "--window must be an integer >= 1; got 0"),
        (["occlusion", "--stride", "-2"], "--stride must be an integer >= 1; got -2"),
        (["occlusion", "--batch-size", "0"], "--batch-size must be an integer >= 1; got 0"),
        (["occlusion", "--approx", "1"], "--approx must be a number in (0, 1); got 1"),
        (["occlusion", "--approx", "nan"], "--approx must be a number in (0, 1); got nan"),
        (["occlusion", "--method", "bogus"], "--method must be one of incremental, full; got 'bogus'"),
        (["units", "--k", "10001"], "--k must be an integer in 1..10000; got 10001"),
        (["units", "--batch-size", "0"], "--batch-size must be an integer >= 1; got 0"),
        (["embed", "--perplexity", "0.5"], "--perplexity must be a number in 1..1000; got 0.5"),
        (["embed", "--side", "0"], "--side must be an integer in 1..1000; got 0"),
        (["embed", "--n", "0"], "--n (--images) must be an integer >= 1; got 0"),
        (["embed", "--images", "0"], "--n (--images) must be an integer >= 1; got 0"),
        (["diagnose", "--limit", "0"], "--limit must be an integer >= 1; got 0"),
        (["diagnose", "--mostly-dead", "0"], "--mostly-dead must be a number in (0, 1]; got 0"),
        (["diagnose", "--lr", "-1"], "--lr must be a number > 0; got -1"),
    ],
)  # fmt: skip
def test_analysis_options_out_of_range_name_their_flag(tmp_path: Path, args: list[str], line: str) -> None:
    """The library's own message names its parameter ("batch must be …" for --batch-size): the
    command checks its flags first, so the line names the flag and comes before torch is imported."""
    _refused(run_cli(*args, "--out", str(tmp_path / "o"), cwd=tmp_path), f"error: {line}")
    assert not (tmp_path / "o").exists()
