"""`convscope demo | train | serve` (and the hidden `answer`): the built-in trainer, the live
dashboard server, and the processes around them."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from convscope.cli.app import _free_threads, app
from convscope.config import LOCAL_HOSTS, ServeConfig, TrainConfig
from convscope.models import zoo_names


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="dashboard port (a free one is chosen if taken)")] = 8000,
    steps: Annotated[int | None, typer.Option(help="stop training after this many steps")] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="do not open a browser")] = False,
    runs: Annotated[Path, typer.Option(help="folder of runs; the demo run is kept there")] = Path("runs"),
    model: Annotated[str, typer.Option("--model", "-m", help=f"a zoo net: zoo:NAME ({', '.join(zoo_names())})")] = "zoo:convnetjs-cifar",
    data: Annotated[str, typer.Option(help="builtin:photo-crops, builtin:digits, or a dataset folder")] = "builtin:photo-crops",
    allow_host: Annotated[list[str] | None, typer.Option("--allow-host", help="another Host name the dashboard answers to (repeatable), e.g. this machine's name; localhost, 127.0.0.1, [::1] and --host always are")] = None,
) -> None:
    """Train the built-in net on built-in data and watch it live at http://127.0.0.1:PORT.

    The trainer runs in a child process and the dashboard in this one; they meet only in the run
    store (runs/demo-*/run.sqlite, and the `watched` mark beside it: while a page is open the
    trainer leaves a core to the dashboard). Ctrl-C stops both; the run stays on disk.

    Example: convscope demo --steps 5000 --no-browser
    """
    import webbrowser

    # every option checked before the trainer starts: a bad one creates no run folder
    TrainConfig(model=model, data=data, steps=steps)
    _serve_config(host="127.0.0.1", port=port, token=None, allow_hosts=tuple(allow_host or ()))
    run_dir = runs / time.strftime("demo-%Y%m%d-%H%M%S")
    cmd = [sys.executable, "-m", "convscope", "train", "--run", str(run_dir), "--model", model, "--data", data]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    child = subprocess.Popen(cmd, preexec_fn=_end_with_parent())
    try:
        _wait_for_run(run_dir, child)
        port = _listen_port("127.0.0.1", port)
        url = f"http://127.0.0.1:{port}/?run={run_dir.name}"
        typer.echo(f"dashboard: {url}   (Ctrl-C stops training and the dashboard; the run stays in {run_dir})")
        if not no_browser:
            webbrowser.open(url)
        _serve(runs, host="127.0.0.1", port=port, token=None, allow_hosts=tuple(allow_host or ()))
    finally:
        _stop_child(child)
    typer.echo(f"run kept: {run_dir.resolve()}")


_TRAIN = TrainConfig()  # the built-in trainer's defaults, shown by `train --help`


@app.command()
def train(
    run: Annotated[Path, typer.Option(help="the run folder to write (created)")],
    model: Annotated[str, typer.Option("--model", "-m", help=f"a zoo net: zoo:NAME ({', '.join(zoo_names())})")] = "zoo:convnetjs-cifar",
    data: Annotated[str, typer.Option(help="builtin:photo-crops, builtin:digits, or a dataset folder")] = "builtin:photo-crops",
    steps: Annotated[int | None, typer.Option(help="stop after this many steps (default: until Ctrl-C)")] = None,
    lr: Annotated[float, typer.Option(help="SGD learning rate")] = _TRAIN.lr,
    batch_size: Annotated[int, typer.Option(help="examples per step")] = _TRAIN.batch_size,
    momentum: Annotated[float, typer.Option(help="SGD momentum")] = _TRAIN.momentum,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay")] = _TRAIN.weight_decay,
    train_size: Annotated[int, typer.Option(help="training examples")] = _TRAIN.train_size,
    resume: Annotated[bool, typer.Option(help="append to an existing run")] = False,
    run_budget_mb: Annotated[float, typer.Option("--run-budget-mb", help="the run's size budget in MB: past it, old snapshots of the biggest tensors are thinned (scalars and stats are kept)")] = 1000.0,
) -> None:
    """Run the built-in trainer into a run folder (watch it with `convscope serve`).

    Example: convscope train --run runs/exp1 --steps 2000 --lr 0.02
    """
    from convscope.train import Trainer

    least_mb, most_mb = 2**20 / 10**6, 1e12  # TrainConfig's least run_budget_bytes (1 MiB), an exabyte
    if not (math.isfinite(run_budget_mb) and least_mb <= run_budget_mb <= most_mb):  # nan, inf, -1
        raise ValueError(f"--run-budget-mb must be a finite number of MB in {least_mb}..{most_mb:g}, got {run_budget_mb:g}")
    cfg = TrainConfig(model=model, data=data, steps=steps, lr=lr, batch_size=batch_size, momentum=momentum,
                      weight_decay=weight_decay, train_size=train_size, run_budget_bytes=int(run_budget_mb * 10**6))
    started: list[Trainer] = []
    stop_asked: list[int] = []

    def graceful(signum: int, frame: object) -> None:  # finish the step, close the run as "stopped"
        stop_asked.append(signum)  # also while the trainer is still being built (demo's parent died)
        if started:
            started[0].stop()

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    from convscope.runs.store import RunExistsError

    try:
        trainer = Trainer(cfg, run, resume=resume, notify=lambda line: typer.echo(f"warning: {line}", err=True))
    except RunExistsError:
        raise ValueError(f"{run} already holds a run: pass --resume to continue it, or choose a new --run folder") from None
    started.append(trainer)
    if stop_asked:
        trainer.stop()
    typer.echo(f"training {model} on {data} into {run}")
    trainer.run()


@app.command(hidden=True)
def answer(
    run: Annotated[Path, typer.Option(help="the run directory whose projection requests to answer")],
    idle: Annotated[float, typer.Option(help="exit after this many seconds without a request")] = 60.0,
) -> None:
    """Answer a finished run's projection requests from its newest checkpoint (`serve` starts this).

    Example: convscope answer --run runs/exp1
    """
    from convscope.train.worker import answer_requests

    if not 0 < idle <= 3600:
        raise typer.BadParameter("--idle must be in (0, 3600] seconds")
    _free_threads()
    done = answer_requests(run, idle_s=idle)
    typer.echo(f"answered {done} request(s)")


@app.command()
def serve(
    runs: Annotated[Path, typer.Argument(help="folder holding run folders")] = Path("runs"),
    host: Annotated[str, typer.Option(help="address to bind; anything but 127.0.0.1 needs a token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (a free one is chosen if taken)")] = 8000,
    token: Annotated[str | None, typer.Option(help="access token (generated when --host is not loopback)")] = None,
    allow_host: Annotated[list[str] | None, typer.Option("--allow-host", help="another Host name the dashboard answers to (repeatable), e.g. this machine's name; localhost, 127.0.0.1, [::1] and --host always are")] = None,
) -> None:
    """Serve the dashboard over recorded runs (the trainer may be running in another process).

    Example: convscope serve runs/ --port 8080
    """
    import secrets

    if not runs.is_dir():
        raise ValueError(f"{runs} is not a folder of runs")
    if host not in LOCAL_HOSTS and token is None:
        token = secrets.token_urlsafe(24)
    # every option checked before anything is printed or started (each error names its flag)
    _serve_config(host=host, port=port, token=token, allow_hosts=tuple(allow_host or ()))
    port = _listen_port(host, port)
    suffix = f"?token={token}" if token else ""
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"dashboard: http://{shown}:{port}/{suffix}")
    _serve(runs, host=host, port=port, token=token, allow_hosts=tuple(allow_host or ()))


#: ServeConfig's field names in its errors → the flags that set them
_FLAGS = {"ServeConfig.token": "--token", "ServeConfig.allow_hosts": "--allow-host",
          "ServeConfig.host": "--host", "ServeConfig.port": "--port"}


def _serve_config(*, host: str, port: int, token: str | None, allow_hosts: tuple[str, ...]) -> ServeConfig:
    """The dashboard's settings from the command line, checked up front: a ValueError naming the flag."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port} is out of range 0..65535 (0: any free port)")
    try:
        return ServeConfig(host=host, port=port, token=token, allow_hosts=allow_hosts)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        for field, flag in _FLAGS.items():
            text = text.replace(field, flag)
        raise ValueError(text) from None


def _serve(runs: Path, *, host: str, port: int, token: str | None, allow_hosts: tuple[str, ...] = ()) -> None:
    """Blocking; Ctrl-C or SIGTERM ends the live streams and returns (open pages do not hold it
    up), so `demo` can stop its trainer. uvicorn re-raises the signal it caught once it has shut
    down: SIGTERM's default action would end the process before any `finally` ran."""
    from convscope.server.serve import serve, yield_to_training

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    yield_to_training()  # this process only serves (demo's trainer is a child started before it)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        serve(runs, ServeConfig(host=host, port=port, token=token, allow_hosts=allow_hosts))
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _listen_port(host: str, preferred: int) -> int:
    """The port the dashboard will listen on at `host`: `preferred` (0: any), or a free one when it
    is taken. A host this machine cannot listen on (no such name, not one of its addresses) is a
    ValueError naming --host, before any URL is printed. Binds as uvicorn's asyncio server does."""
    try:
        _bind_all(host, 0)
    except OSError as exc:  # socket.gaierror too
        reason = exc.strerror or str(exc)
        raise ValueError(
            f"--host {host} cannot be listened on ({reason}): give an address of this machine, "
            "e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    if preferred:
        try:
            return _bind_all(host, preferred)
        except OSError:  # taken (or not ours to take): a free one instead
            pass
    for _ in range(5):  # port 0 on every address of `host` at once: one that is free on all
        try:
            return _bind_all(host, _bind_all(host, 0, first_only=True))
        except OSError:
            continue
    raise RuntimeError(f"no free port on {host}")


def _bind_all(host: str, port: int, *, first_only: bool = False) -> int:
    """Bind (and close) a listening socket on each of `host`'s addresses at `port`, as asyncio's
    create_server does; the port bound (the first address's). Raises OSError when one fails."""
    import socket

    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # the address family is not supported here: asyncio skips it too
                continue
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            sock.bind(address)
            if first_only:
                break
        if not bound:
            raise OSError(f"no address of {host} can be listened on")
        return int(bound[0].getsockname()[1])
    finally:
        for sock in bound:
            sock.close()


def _wait_for_run(run_dir: Path, child: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "run.sqlite").exists():
        code = child.poll()
        if code is not None:
            raise RuntimeError(f"the trainer exited with code {code} before writing {run_dir}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the trainer did not create {run_dir} within {timeout:.0f} s")
        time.sleep(0.2)


def _end_with_parent() -> Callable[[], None] | None:
    """Popen's preexec_fn for demo's trainer child: on Linux the child gets SIGTERM when this
    process dies, even by kill -9 (prctl PR_SET_PDEATHSIG), and closes its run as "stopped"
    instead of training on as an orphan. Elsewhere None (only Ctrl-C/SIGTERM stop the child)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: no import after the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG; kept across exec
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # the trainer finishes its step and closes the run as "stopped"
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


