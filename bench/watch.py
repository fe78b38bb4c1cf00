"""Live-dashboard benchmark: what `watch()` costs a training loop, how fast a new snapshot reaches
the page, and how fast the built-in demo trainer trains.

    make bench                                   # = capture.py, then this file
    .venv/bin/python bench/watch.py              # the full run (about 8 minutes)
    .venv/bin/python bench/watch.py --quick      # about 1 minute: a smoke run
    .venv/bin/python bench/watch.py --threads 0  # torch's own thread count (default here: 1)

Model zoo:convnetjs-cifar, data builtin:photo-crops (3x32x32), SGD, CPU. Three parts:

1. watch() on vs off, in one process on two copies of one model (same seed) and one set of
   batches: the same training step (forward, cross-entropy, backward, SGD) with and without
   `run.step(loss=loss)` of a `watch(model, run_dir)` recorder with its defaults (statistics,
   snapshots every ~2 s and live diagnosis within its 3% budget), on convnetjs-cifar at batch 32
   and 64 and the ResNet-18-shaped net at batch 8. The watched copy is watched throughout (a
   recorder is opened once per run: its first steps, layer table and first costs, run before
   timing). Interleaved samples of about 2 s, one snapshot period (off, on, on, off, ...: the
   start rotates); the ratio is the median of each round's own on/off ratio (the two samples of a
   round ran back to back: a slow spell of the shared machine slows both). The watched
   recorder's clocks leave out the unwatched samples (`Away`): it plans as in a run of its own.
   Goal: on/off throughput >= 0.97x. When it misses, a per-phase split and a cProfile (CPU
   clock) of the watched steps name where the time goes.
2. The live channel, as `convscope demo` runs it: training with watch on in this process, the
   real app (create_app + uvicorn in a thread, DashboardServer on a free 127.0.0.1 port) in a
   second process, SSE clients (asyncio + httpx) in a third. Each client does what the page does
   on a `step` event whose `snapshot_step` is new: GET /snapshots, then the PNG of that step's
   `a` of the first block, then the rest of the first card's pictures (x, dL/da, W, dL/dW,
   z|a, dL/dz) in parallel. Measured from `commit()` returning (in the trainer) to the client
   holding the event, the first PNG and the whole card (one monotonic clock across processes):
   median and p95, with 1 client and with 20. Training throughput (watch on) is timed in the
   same interleaved samples with 0, 1 and 20 clients connected; goal 20 clients >= 0.95x none.
3. The built-in Trainer (`Trainer(TrainConfig(...)).train_step()`, the demo's settings:
   validation every 100 steps, snapshots every 2 s) in blocks of 100 steps at batch 32 (the
   demo's) and 4 (ConvNetJS's), as examples per second next to ConvNetJS's few hundred per
   second in the browser (the issue's figure, not measured here). Aim: well over 10x.

Throughput is reported as examples per wall second AND per CPU second of the training process
(all its threads): this machine is shared, and wall time includes waiting for a core while CPU
time is what the work costs. "Core wait" is the share of the loop's wall time spent runnable
but waiting for a CPU (Linux schedstat): it is what separates the two. Part 2 also reports the
CPU cores the server and client processes used. Torch threads: 1 by default, because on a
2-core machine that other processes keep busy two torch threads wait on each other and step
times swing 20x; `--threads 0` keeps torch's default. The load average before and after is
printed. Results go to bench/results/watch.json. Timing method: bench/_timing.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import functools
import json
import math
import multiprocessing as mp
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _timing import Away, Contender, Timing, compare, git_commit, load_average, paired
from torch import Tensor

import convscope
from convscope.config import ServeConfig, TrainConfig
from convscope.data import photo_crops
from convscope.models.zoo import ZOO
from convscope.runs import RunReader
from convscope.train.loop import Trainer
from convscope.train.watch import Recorder

NET = "convnetjs-cifar"
BIG = "resnet18-shaped"  # part 1 also runs the ResNet-18-shaped net (224x224) at batch 8
GOAL = 0.97  # watch on / off (issue 10 goal 1)
WARM_STEPS = 3  # watched steps before timing (the recorder's first: layer table, snapshot, costs)
WARM_STEPS_BIG = 20  # on BIG: its first snapshot (~1.3 s of writer CPU) paid, 3 costs known of each statistics kind
# (the whole statistics, and the maps' only: recorder_budget.py MAPS), the first diagnosis samples' debt repaid
GOAL_CLIENTS = 0.95  # 20 clients / none: training throughput (goal 4)
CONVNETJS_EX_PER_S = 300.0  # ConvNetJS's CIFAR-10 demo in a browser: "a few hundred" examples/s
AIM_OVER_CONVNETJS = 10.0
SNAPSHOT_EVERY = 2.0  # seconds: watch()'s default
CLIENTS = (0, 1, 20)
RESULTS = Path(__file__).resolve().parent / "results" / "watch.json"
PANELS = ("x", "grad_a", "weight", "grad_weight", "za", "grad_z")  # the first card, after `a`


@dataclass(frozen=True)
class Plan:
    """How long each part runs (full or quick)."""

    batches: tuple[tuple[str, int], ...] = ((NET, 32), (NET, 64), (BIG, 8))
    overhead_sample_s: float = 2.0  # a snapshot period (every watched sample holds about one)
    overhead_rounds: int = 24  # (12 gave B=64 ratios of 0.94-0.99 for one code: 2-s samples spread 6-11%)
    overhead_budget_s: float = 96.0
    live_sample_s: float = 10.0
    live_rounds: int = 5
    live_budget_s: float = 150.0
    demo_rounds: int = 4
    demo_train_size: int = 4096
    profile_steps: int = 150


FULL = Plan()
QUICK = Plan(
    overhead_sample_s=1.0, overhead_rounds=2, overhead_budget_s=4.0,
    live_sample_s=3.0, live_rounds=2, live_budget_s=10.0,
    demo_rounds=1, demo_train_size=1024, profile_steps=40,
)  # fmt: skip


# ---- the user's training loop -------------------------------------------------------------------
class Loop:
    """A plain training loop over fixed batches of builtin:photo-crops; `step()` is one step."""

    def __init__(self, batch: int, x: Tensor, y: Tensor, *, seed: int = 0, net: str = NET) -> None:
        torch.manual_seed(seed)
        self.batch, self.net = batch, net
        self.model = ZOO[net].factory().train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(seed)
        self.batches = [
            (x[idx], y[idx])  # (B, C, H, W), (B,)
            for idx in (torch.randperm(len(x), generator=g)[:batch] for _ in range(32))
        ]
        self.i = 0
        self.recorder: Recorder | None = None

    def step(self) -> Tensor:
        xb, yb = self.batches[self.i % len(self.batches)]
        self.i += 1
        loss = F.cross_entropy(self.model(xb), yb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss

    def watched_step(self) -> None:
        assert self.recorder is not None
        self.recorder.step(loss=self.step())

    def open(self, run_dir: Path, away: Away | None = None) -> Recorder:
        """A recorder with watch()'s defaults on `run_dir` (resumed when it exists), then one untimed
        step. With `away`, the recorder runs on clocks that leave out the time it was not watching
        (`_timing.Away`: the unwatched samples between its own, so it plans as in a run of its own:
        docs/speed.md says what they did to it before)."""
        self.recorder = Recorder(
            self.model, run_dir, resume=(run_dir / "run.sqlite").exists(),
            snapshot_every=SNAPSHOT_EVERY, meta={"model": f"zoo:{self.net}"},
            **(away.clocks() if away is not None else {}),  # (none: watch()'s own)
        )  # fmt: skip
        if away is not None:
            away.follow(self.recorder.writer)
        self.watched_step()
        return self.recorder

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None


def load_data(n: int, net: str = NET) -> tuple[Tensor, Tensor]:
    x, y = photo_crops("train", n, size=ZOO[net].input_shape[1], seed=0)  # (N, 3, H, W) in [0, 1]
    mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / std, y


# ---- waiting for a core: what separates wall time from CPU time on a shared machine -------------
def _thread_waits(pid: int | str = "self") -> dict[str, int]:
    """Nanoseconds each live thread of process `pid` has spent runnable but waiting for a CPU
    (Linux schedstat run_delay; empty where unavailable)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(OSError, IndexError, ValueError),
                open(f"/proc/{pid}/task/{task}/schedstat") as f,
            ):
                out[task] = int(f.read().split()[1])
    return out


def _waited_since(before: dict[str, int], pid: int | str = "self") -> float:
    """Seconds waited for a CPU since `before`, summed over threads (threads that started since
    count whole; threads that ended since are left out: a lower bound when threads come and go)."""
    now = _thread_waits(pid)
    return sum(v - before.get(t, 0) for t, v in now.items()) / 1e9


class Waits:
    """Run-queue wait per timed sample: `around(name, setup, teardown)` gives a contender's
    setup/teardown that also read the wait just before and just after the timed calls."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}  # seconds waited per sample, in sample order
        self._mark: dict[str, int] = {}

    def around(
        self, name: str, setup: Callable[[], object] | None, teardown: Callable[[], object] | None
    ) -> dict[str, Callable[[], None]]:
        def begin() -> None:
            if setup is not None:
                setup()
            self._mark = _thread_waits()

        def end() -> None:
            self.samples.setdefault(name, []).append(_waited_since(self._mark))
            if teardown is not None:
                teardown()

        return {"setup": begin, "teardown": end}

    def share(self, name: str, t: Timing) -> float:
        """Fraction of the timed rounds' wall time spent waiting for a core (warmup and
        calibration samples come first and are left out)."""
        waited = self.samples.get(name, [])[-len(t.samples) :]
        wall = sum(t.samples) * t.number
        return sum(waited) / wall if wall else 0.0


# ---- 1. watch on vs off -------------------------------------------------------------------------
def bench_overhead(plan: Plan, x: Tensor, y: Tensor, work: Path) -> list[dict[str, Any]]:
    out = []
    for net, batch in plan.batches:
        if net != NET:
            x, y = load_data(4 * batch, net)  # 224x224 crops: a few batches' worth
        loop = Loop(batch, x, y, net=net)  # unwatched
        watched = Loop(batch, x, y, net=net)  # the same net, seed and batches, watched throughout
        run_dir = work / f"overhead-{net}-b{batch}"
        away = Away()  # the unwatched samples: out of the recorder's clocks (docs/speed.md)
        watched.open(run_dir, away)
        for _ in range(WARM_STEPS if net == NET else WARM_STEPS_BIG):  # past the recorder's first steps
            watched.watched_step()
        assert watched.recorder is not None
        warm = watched.recorder.budget.report(reset_window=False)["total"]  # (the timed steps: the rest)
        opens = 1  # the first step's snapshot
        away.leave()

        print(f"  {net} B={batch}: ", end="", flush=True)
        t0 = time.perf_counter()
        waits = Waits()
        timings = compare(
            [
                Contender("watch off", loop.step, **waits.around("watch off", None, None)),
                Contender("watch on", watched.watched_step, **waits.around("watch on", away.back, away.leave)),
            ],
            repeats=plan.overhead_rounds, min_repeats=2, warmup=1,
            min_sample_s=plan.overhead_sample_s, budget_s=plan.overhead_budget_s,
            on_round=lambda r: print(r, end=" ", flush=True),
        )  # fmt: skip
        assert watched.recorder is not None
        budget = watched.recorder.budget
        recording = budget.report(reset_window=False)["total"]
        recording["timed_steps"] = recording["steps"] - warm["steps"]
        recording["timed_stats_steps"] = recording["stats_steps"] - warm["stats_steps"]
        recording["timed_weight_stats_steps"] = recording["weight_stats_steps"] - warm["weight_stats_steps"]
        # a statistics step's cost (its own work and the probe's, as the recorder estimates it) over
        # a plain loop: above the statistics' part of the budget, they cannot come every step
        plain_loop = budget.estimate("base") + budget.typical_loop()
        recording["stats_cost_share"] = budget.estimate("stats") / plain_loop if plain_loop else None
        watched.close()
        print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
        off, on = timings["watch off"], timings["watch on"]
        timed_on_s = sum(on.samples) * on.number
        with RunReader(run_dir) as r:
            first = _first_block(r)
            shots = len(r.snapshot_steps(first, "a")) if first else 0
        out.append(
            {
                "net": net,
                "batch": batch,
                **_throughput_pair(batch, off, on),
                "core_wait_share": [waits.share("watch off", off), waits.share("watch on", on)],
                "snapshots_in_timed_steps": max(shots - opens, 0),
                "recording": recording,
                "timed_on_s": timed_on_s,
                "timings": {k: t.as_dict() for k, t in timings.items()},
            }
        )
    return out


def _throughput_pair(batch: int, base: Timing, other: Timing) -> dict[str, Any]:
    """Examples/s (wall and per CPU second) of two timings, and the ratio other/base: the median of
    the rounds' own ratios (`paired`), beside the ratio of the two medians (`ratio_of_medians_*`),
    which a slow spell of the machine moves (B=64 samples of one run ranged 20-26 ms a step)."""
    wall = [batch / base.median, batch / other.median]
    cpu = [batch / base.cpu_median, batch / other.cpu_median]
    return {
        "ex_per_s": wall,
        "ex_per_cpu_s": cpu,
        "ratio_wall": paired(base.samples, other.samples),
        "ratio_cpu": paired(base.cpu_samples, other.cpu_samples),
        "ratio_of_medians_wall": wall[1] / wall[0],
        "ratio_of_medians_cpu": cpu[1] / cpu[0],
        "noise": max(base.spread, other.spread),
        "noise_cpu": max(base.cpu_spread, other.cpu_spread),
        "rounds": len(base.samples),
        "steps_per_sample": [base.number, other.number],
    }


def _first_block(r: RunReader) -> str | None:
    found = r.json("layers")
    rows = found[1] if found else []
    return str(rows[0]["name"]) if rows else None


# ---- where the watch() overhead goes (when a ratio misses) --------------------------------------
def where_time_goes(loop: Loop, run_dir: Path, steps: int) -> dict[str, Any]:
    """CPU ms per step of each phase, watch off vs on (interleaved blocks), and a cProfile
    (process CPU clock) of `steps` watched steps: convscope functions by cumulative time."""
    clock = time.process_time
    phases: dict[str, dict[str, list[float]]] = {m: {} for m in ("off", "on")}
    block = max(steps // 3, 10)
    for _ in range(3):
        for mode in ("off", "on"):
            if mode == "on":
                loop.open(run_dir)
            for _ in range(block):
                xb, yb = loop.batches[loop.i % len(loop.batches)]
                loop.i += 1
                t0 = clock()
                loss = F.cross_entropy(loop.model(xb), yb)
                t1 = clock()
                loop.opt.zero_grad(set_to_none=True)
                loss.backward()
                t2 = clock()
                loop.opt.step()
                t3 = clock()
                if loop.recorder is not None:
                    loop.recorder.step(loss=loss)
                t4 = clock()
                for name, v in zip(("forward", "backward", "optimizer", "run.step"),
                                   (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):  # fmt: skip
                    phases[mode].setdefault(name, []).append(v)
            loop.close()
    split = {m: {k: 1e3 * statistics.median(v) for k, v in d.items()} for m, d in phases.items()}

    loop.open(run_dir)
    prof = cProfile.Profile(clock)
    t0 = clock()
    prof.enable()
    for _ in range(steps):
        loop.watched_step()
    prof.disable()
    total_ms = 1e3 * (clock() - t0) / steps
    loop.close()
    st: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    per_step = 1e3 / steps  # seconds over the profile -> ms per step
    own_code: list[dict[str, Any]] = []  # convscope functions (not the model): cum and own time
    called: dict[str, float] = {}  # torch/sqlite/zlib/json calls made by run.step's code: own time
    for (file, line, func), (_, _, own, cum, callers) in st.items():
        where = _package_path(file)
        if where is not None and not where.startswith("models/"):
            own_code.append({"where": f"{where}:{line} {func}", "cum_ms_per_step": cum * per_step,
                             "own_ms_per_step": own * per_step})  # fmt: skip
        if where is None:
            from_step = sum(
                v[2]
                for c, v in callers.items()
                if (_package_path(c[0]) or "").startswith(STEP_CODE)
            )
            if from_step:
                name = _call_name(func) if file == "~" else f"{Path(file).name}:{func}"
                called[name] = called.get(name, 0.0) + from_step * per_step
    own_code.sort(key=lambda r: -r["cum_ms_per_step"])
    hot = [r for r in own_code if r["cum_ms_per_step"] >= 0.02 * total_ms][:14]
    calls = sorted(called.items(), key=lambda kv: -kv[1])[:10]
    # what Recorder.step itself calls, each with its cumulative time: the step's own budget
    step_key = next(
        k for k in st if k[2] == "step" and (_package_path(k[0]) or "").startswith("train/watch")
    )
    parts = {
        _where(k): v[4][step_key][3] * per_step
        for k, v in st.items() if step_key in v[4]
    }  # fmt: skip
    split_step = sorted(parts.items(), key=lambda kv: -kv[1])[:8]
    return {"batch": loop.batch, "cpu_ms_per_phase": split, "profiled_steps": steps,
            "profiled_cpu_ms_per_step": total_ms, "hot": hot,
            "step_calls": [{"call": k, "cum_ms_per_step": v} for k, v in split_step],
            "step_cum_ms_per_step": st[step_key][3] * per_step,
            "calls_from_step_code": [{"call": k, "own_ms_per_step": v} for k, v in calls]}  # fmt: skip


STEP_CODE = ("train/", "runs/", "analysis/")  # what run.step runs (the probe is in capture/)
PACKAGE = str(Path(convscope.__file__).parent) + os.sep


def _where(key: tuple[str, int, str]) -> str:
    """A profile entry as 'train/watch.py:180 _log_stats' (package code) or 'torch.aminmax'."""
    file, line, func = key
    if file == "~":
        return _call_name(func)
    return f"{_package_path(file) or Path(file).name}:{line} {func}"


def _call_name(func: str) -> str:
    """ "<method 'amax' of 'torch._C.TensorBase' objects>" -> "TensorBase.amax", and alike."""
    if func.startswith("<built-in method "):
        return func[len("<built-in method ") : -1]
    if func.startswith("<method '") and "' of '" in func:
        meth, owner = func[len("<method '") :].split("' of '", 1)
        cls = owner.split("'", 1)[0].rsplit(".", 1)[-1]
        return f"{cls}.{meth}"
    return func


def _package_path(file: str) -> str | None:
    """'train/watch.py' for a file of the convscope package, else None."""
    return file[len(PACKAGE) :].replace(os.sep, "/") if file.startswith(PACKAGE) else None


# ---- 2. the live channel --------------------------------------------------------------------------
def _serve_child(runs_root: str, threads: int, conn: Connection) -> None:
    """Second process: the real app (create_app + uvicorn in a thread) until told to stop."""
    from convscope.server.serve import DashboardServer, yield_to_training

    if threads:
        torch.set_num_threads(threads)
    yield_to_training()  # as `convscope serve` and `demo` do
    srv = DashboardServer(Path(runs_root), ServeConfig(port=0)).start()
    conn.send(srv.port)
    conn.recv()  # "stop"
    srv.stop()
    cache = srv.app.state.dash.pictures
    conn.send({"renders": cache.misses, "cache_hits": cache.hits, "cached": len(cache)})


def _clients_child(base: str, run: str, conn: Connection) -> None:
    """Third process: SSE clients, told to connect n / disconnect / quit over `conn`."""
    asyncio.run(_clients_main(base, run, conn))


async def _clients_main(base: str, run: str, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    conn.send(("up",))  # imports done: from here on this process only serves its pages
    tasks: list[asyncio.Task[None]] = []
    samples: list[dict[str, Any]] = []
    errors: list[str] = []
    retried: list[str] = []
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "connect":
            ready = [asyncio.Event() for _ in range(cmd[1])]
            tasks = [
                asyncio.create_task(_page(i, base, run, ready[i], samples, errors, retried))
                for i in range(cmd[1])
            ]
            try:
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 60)
            except TimeoutError:
                errors.append(f"only {sum(e.is_set() for e in ready)}/{len(ready)} connected")
            conn.send(("ready", len(tasks)))
        elif cmd[0] == "disconnect":
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            conn.send(("samples", samples, errors, len(retried)))
            tasks, samples, errors, retried = [], [], [], []
        else:
            return


async def _page(
    i: int, base: str, run: str, ready: asyncio.Event, samples: list[dict[str, Any]],
    errors: list[str], retried: list[str],
) -> None:  # fmt: skip
    """One dashboard page: load the run, listen to its live channel, fetch a new snapshot's card."""
    import httpx

    fetches: set[asyncio.Task[None]] = set()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30.0, read=None)) as http:
            try:
                info = (await _get(http, f"/api/runs/{run}", retried)).json()
                layer = info["layers"][0]["name"]
                seen: int | None = None
                baseline = True
                async with http.stream("GET", f"/api/runs/{run}/events") as resp:
                    name = data = None
                    async for line in resp.aiter_lines():
                        if line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "" and name is not None:
                            if name == "hello":
                                ready.set()
                            elif name == "step" and data is not None:
                                s = json.loads(data).get("snapshot_step")
                                if baseline:  # what the run had when this page connected
                                    baseline, seen = False, s
                                elif s is not None and s != seen:
                                    seen = s
                                    card = _fetch_card(
                                        http, run, layer, s, time.monotonic(), i, samples,
                                        errors, retried,
                                    )  # fmt: skip
                                    task = asyncio.create_task(card)
                                    fetches.add(task)
                                    task.add_done_callback(fetches.discard)
                            name = data = None
                errors.append(f"client {i}: the server ended the live channel")
            finally:  # the page closes: its pending fetches end before `http` closes under them
                for task in fetches:
                    task.cancel()
                await asyncio.gather(*fetches, return_exceptions=True)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a benchmark client reports a failure (in the table), never hides it
        errors.append(f"client {i}: {type(exc).__name__}: {exc}")
        ready.set()


async def _get(http: Any, url: str, retried: list[str], **params: Any) -> Any:
    """GET, retried once when the server closed the kept-alive connection just as it was reused
    (uvicorn closes idle connections after 5 s; browsers retry such a request too)."""
    import httpx

    try:
        return await http.get(url, params=params or None)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        retried.append(url)
        return await http.get(url, params=params or None)


async def _fetch_card(
    http: Any, run: str, layer: str, step: int, t_event: float, client: int,
    samples: list[dict[str, Any]], errors: list[str], retried: list[str],
) -> None:  # fmt: skip
    """As the page: GET /snapshots, the first block's `a` at `step`, then its other pictures."""
    try:
        snap = (await _get(http, f"/api/runs/{run}/snapshots", retried)).json()
        kinds = snap["series"].get(layer, {})
        image = f"/api/runs/{run}/image.png"
        first = await _get(http, image, retried, layer=layer, kind="a", step=step, norm="map")
        t_png = time.monotonic()
        if first.status_code != 200 or first.headers.get("x-step") != str(step):
            errors.append(
                f"image.png {first.status_code} X-Step {first.headers.get('x-step')} for {step}"
            )
            return

        def get(kind: str) -> Any:
            if kind == "za":
                return _get(http, f"/api/runs/{run}/za.png", retried, layer=layer, step=step)
            return _get(http, image, retried, layer=layer, kind=kind, step=step, norm="map")

        wanted = [
            k for k in PANELS if (k in kinds) or (k == "za" and "z" in kinds and "a" in kinds)
        ]
        rest = await asyncio.gather(*(get(k) for k in wanted))
        t_card = time.monotonic()
        bad = [r.status_code for r in rest if r.status_code != 200]
        if bad:
            errors.append(f"card pictures at step {step}: status {bad}")
        samples.append({"client": client, "step": step, "t_event": t_event, "t_png": t_png,
                        "t_card": t_card, "pictures": 1 + len(rest),
                        "png_bytes": len(first.content) + sum(len(r.content) for r in rest)})  # fmt: skip
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # reported as above
        errors.append(f"client {client} fetch {step}: {type(exc).__name__}: {exc}")


def _proc_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) of process `pid` so far, from /proc (0 elsewhere)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LiveRig:
    """The server and client processes, and what each condition (n clients) collected."""

    server: Any
    clients: Any
    server_conn: Connection
    client_conn: Connection
    commits: dict[int, float]
    samples: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    retried: int = 0  # requests retried once on a kept-alive connection the server had closed
    cpu: dict[int, list[list[float]]] = field(default_factory=dict)  # wall, CPU s, waits
    _mark: tuple[Any, ...] = ()

    def connect(self, n: int) -> None:
        if n:
            self.client_conn.send(("connect", n))
            self.client_conn.recv()
        self._mark = (
            time.perf_counter(),
            _proc_cpu_s(self.server.pid),
            _proc_cpu_s(self.clients.pid),
            _thread_waits(),
            _thread_waits(self.server.pid),
        )

    def disconnect(self, n: int) -> None:
        t, s, c, w, sw = self._mark
        self.cpu.setdefault(n, []).append(
            [
                time.perf_counter() - t,
                _proc_cpu_s(self.server.pid) - s,
                _proc_cpu_s(self.clients.pid) - c,
                _waited_since(w),
                _waited_since(sw, self.server.pid),
            ]
        )
        if n:
            self.client_conn.send(("disconnect",))
            _, got, errs, retried = self.client_conn.recv()
            self.samples.setdefault(n, []).extend(got)
            self.errors.extend(errs)
            self.retried += retried


def bench_live(
    plan: Plan, x: Tensor, y: Tensor, work: Path, threads: int, started: list[Any]
) -> dict[str, Any]:
    """Part 2; the child processes it starts are appended to `started` (joined by the caller)."""
    runs_root = work / "live-runs"
    runs_root.mkdir()
    loop = Loop(32, x, y)
    rec = loop.open(runs_root / "live")
    commits: dict[int, float] = {}
    commit = rec.writer.commit

    def timed_commit(step: int) -> None:
        commit(step)
        commits[step] = time.monotonic()  # the moment the step is readable by the server

    rec.writer.commit = timed_commit  # type: ignore[method-assign]
    ctx = mp.get_context("spawn")
    s_parent, s_child = ctx.Pipe()
    c_parent, c_child = ctx.Pipe()
    server = ctx.Process(target=_serve_child, args=(str(runs_root), threads, s_child), daemon=True)
    server.start()
    started.append(server)
    try:
        if not s_parent.poll(90):
            raise RuntimeError("the dashboard process did not start within 90 s")
        port = s_parent.recv()
        base = f"http://127.0.0.1:{port}"
        clients = ctx.Process(target=_clients_child, args=(base, "live", c_child), daemon=True)
        clients.start()
        started.append(clients)
        if not c_parent.poll(90):
            raise RuntimeError("the client process did not start within 90 s")
        c_parent.recv()
        rig = LiveRig(server, clients, s_parent, c_parent, commits)
        contenders = [
            Contender(
                f"{n} clients",
                loop.watched_step,
                setup=functools.partial(rig.connect, n),
                teardown=functools.partial(rig.disconnect, n),
            )
            for n in CLIENTS
        ]
        print("  rounds: ", end="", flush=True)
        t0 = time.perf_counter()
        timings = compare(
            contenders, repeats=plan.live_rounds, min_repeats=2, warmup=1,
            min_sample_s=plan.live_sample_s, budget_s=plan.live_budget_s,
            on_round=lambda r: print(r, end=" ", flush=True),
        )  # fmt: skip
        print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        loop.close()
        for conn, word in ((c_parent, ("quit",)), (s_parent, "stop")):
            with contextlib.suppress(OSError):
                conn.send(word)
    server_report = s_parent.recv() if s_parent.poll(30) else {}
    base_t = timings["0 clients"]
    result: dict[str, Any] = {
        "batch": loop.batch,
        "poll_s": ServeConfig().poll_s,
        "latency": {n: _latency(rig.samples.get(n, []), commits) for n in CLIENTS if n},
        "throughput": {
            n: _throughput_pair(loop.batch, base_t, timings[f"{n} clients"]) for n in CLIENTS
        },
        "helper_cores": {  # the timed rounds come last (after warmup and calibration)
            n: _cores(rig.cpu[n][-len(timings[f"{n} clients"].samples) :]) for n in rig.cpu
        },
        "server": server_report,
        "errors": rig.errors[:20],
        "error_count": len(rig.errors),
        "retried_requests": rig.retried,
        "timings": {k: t.as_dict() for k, t in timings.items()},
    }
    return result


def _cores(samples: list[list[float]]) -> dict[str, float]:
    """CPU cores the server and client processes used over the timed samples, and the share of
    the trainer's wall time it spent waiting for a core."""
    wall = sum(v[0] for v in samples) or math.inf
    return {
        "server": sum(v[1] for v in samples) / wall,
        "clients": sum(v[2] for v in samples) / wall,
        "trainer_core_wait_share": sum(v[3] for v in samples) / wall,
        "server_core_wait_s_per_s": sum(v[4] for v in samples) / wall,  # summed over its threads
    }


def _latency(samples: list[dict[str, Any]], commits: dict[int, float]) -> dict[str, Any]:
    """Seconds from commit() to event / first PNG / whole card: median, p95, max, count."""
    out: dict[str, Any] = {"n": 0}
    rows = [s for s in samples if s["step"] in commits]
    for what in ("event", "png", "card"):
        vals = sorted(s[f"t_{what}"] - commits[s["step"]] for s in rows)
        if vals:
            out[what] = {"median_s": statistics.median(vals), "p95_s": _quantile(vals, 0.95),
                         "max_s": vals[-1]}  # fmt: skip
    out["n"] = len(rows)
    out["snapshots"] = len({s["step"] for s in rows})
    out["pictures_per_card"] = rows[0]["pictures"] if rows else None
    out["card_kib"] = rows[0]["png_bytes"] / 1024 if rows else None
    return out


def _quantile(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list."""
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


# ---- 3. the built-in trainer --------------------------------------------------------------------
def bench_demo(plan: Plan, work: Path) -> list[dict[str, Any]]:
    batches = (32, 4)
    trainers: dict[int, Trainer] = {}
    for b in batches:
        cfg = TrainConfig(batch_size=b, train_size=plan.demo_train_size, seed=0,
                          snapshot_every=SNAPSHOT_EVERY)  # fmt: skip
        trainers[b] = Trainer(cfg, work / f"demo-b{b}")
        test = trainers[b].data.xtest  # (N, C, H, W): written at step 0, as run() does
        trainers[b].writer.log_snapshot(0, "_test", "input", test)
    block = TrainConfig().val_every  # one validation per block, as in the demo's steady state
    walls: dict[int, list[float]] = {b: [] for b in batches}
    cpus: dict[int, list[float]] = {b: [] for b in batches}
    print("  rounds: ", end="", flush=True)
    for r in range(plan.demo_rounds + 1):  # round 0 warms up (first validation, first snapshot)
        order = batches if r % 2 == 0 else batches[::-1]
        for b in order:
            t, c = time.perf_counter(), time.process_time()
            for _ in range(block):
                trainers[b].train_step()
            if r:
                walls[b].append(time.perf_counter() - t)
                cpus[b].append(time.process_time() - c)
        if r:
            print(r, end=" ", flush=True)
    print()
    out = []
    for b in batches:
        trainers[b].recorder.close()
        wall = block * b / statistics.median(walls[b])
        cpu = block * b / statistics.median(cpus[b])
        out.append({"batch": b, "steps_per_block": block, "blocks": len(walls[b]),
                    "ex_per_s": wall, "ex_per_cpu_s": cpu,
                    "over_convnetjs": wall / CONVNETJS_EX_PER_S,
                    "over_convnetjs_cpu": cpu / CONVNETJS_EX_PER_S,
                    "block_wall_s": walls[b], "block_cpu_s": cpus[b]})  # fmt: skip
    return out


# ---- report ---------------------------------------------------------------------------------------
def _ok(ratio: float, goal: float) -> str:
    return "ok" if ratio >= goal else "MISSED"


def print_report(res: dict[str, Any]) -> None:
    meta = res["meta"]
    print()
    print(
        f"convscope live-dashboard benchmark — torch {meta['torch']}, {meta['threads']} torch"
        f" thread(s) on {meta['cpus']} CPUs, zoo:{NET} on builtin:photo-crops, SGD"
    )
    print()
    print("1. training throughput, watch() on (its defaults: statistics, snapshots every ~2 s and"
          " live diagnosis within a 3% budget) vs off")
    head = (f"{'net':>16}{'B':>4}{'off ex/s':>10}{'on ex/s':>9}{'on/off':>8}   {'off ex/CPU-s':>12}"
            f"{'on ex/CPU-s':>12}{'on/off':>8}  {'noise':>5}  {'core wait off/on':>16}"
            f"  {'snapshots':>11}   goal ≥{GOAL}× (wall, CPU)")  # fmt: skip
    print(head)
    print("─" * len(head))
    for r in res["overhead"]:
        w, c, wait = r["ex_per_s"], r["ex_per_cpu_s"], r["core_wait_share"]
        print(
            f"{r.get('net', NET):>16}{r['batch']:>4}{w[0]:>10.0f}{w[1]:>9.0f}{r['ratio_wall']:>7.2f}×   {c[0]:>12.0f}"
            f"{c[1]:>12.0f}{r['ratio_cpu']:>7.2f}×  {max(r['noise'], r['noise_cpu']):>5.0%}"
            f"  {wait[0]:>8.0%} / {wait[1]:>4.0%}"
            f"  {r['snapshots_in_timed_steps']:>3} in {r['timed_on_s']:>3.0f} s"
            f"   {_ok(r['ratio_wall'], GOAL)}, {_ok(r['ratio_cpu'], GOAL)}"
        )
    for r in res["overhead"]:
        t = r.get("recording") or {}
        if t:
            timed = (f" ({t['timed_stats_steps']} of the {t['timed_steps']} timed,"
                     f" the weights' side on {t.get('timed_weight_stats_steps', '?')} of them)"
                     if "timed_steps" in t else "")  # fmt: skip
            cost = (f"; a statistics step costs {100 * t['stats_cost_share']:.1f}% of a step"
                    if t.get("stats_cost_share") else "")  # fmt: skip
            print(f"   {r.get('net', NET)} B={r['batch']}: the recorder kept statistics on {t['stats_steps']} of"
                  f" {t['steps']} steps{timed}, {t['snapshots']} snapshots, {t['diagnosis_samples']} diagnosis samples;"
                  f" its own measured cost {100 * (t['cost_share'] or 0):.1f}% of the step time{cost}")  # fmt: skip
    print("   core wait: share of the loop's wall time spent runnable but waiting for a CPU"
          " (other processes); snapshots: taken during the timed watched steps")  # fmt: skip
    prof = res.get("profile")
    if prof:
        print()
        ph = prof["cpu_ms_per_phase"]
        print(f"   where the overhead goes (B={prof['batch']}, CPU ms per step, median of watched"
              " vs plain steps):")  # fmt: skip
        print("   " + ", ".join(
            f"{k} {ph['off'][k]:.2f} → {ph['on'][k]:.2f} ({ph['on'][k] - ph['off'][k]:+.2f})"
            for k in ph["on"]))  # fmt: skip
        print(
            f"   cProfile (CPU clock) of {prof['profiled_steps']} watched steps,"
            f" {prof['profiled_cpu_ms_per_step']:.1f} ms/step under the profiler; convscope"
            " code (cumulative, own ms/step) — the probe's __torch_function__/_on_function wrap"
            " every torch call of the forward, so their cumulative time includes the model's own"
            " conv/pool work (the phase split above gives the probe's real cost):"
        )
        for h in prof["hot"]:
            print(f"     {h['cum_ms_per_step']:6.2f} {h['own_ms_per_step']:6.2f}  {h['where']}")
        inside = ", ".join(f"{c['call']} {c['cum_ms_per_step']:.2f}" for c in prof["step_calls"])
        print(f"   Recorder.step ({prof['step_cum_ms_per_step']:.2f} ms/step) calls: {inside}")
        calls = ", ".join(
            f"{c['call']} {c['own_ms_per_step']:.2f}" for c in prof["calls_from_step_code"]
        )
        print(
            f"   library calls made by run.step's code (train/, runs/, analysis/), ms/step: {calls}"
        )
    if "live" not in res:
        print(f"load average (1/5/15 min) before {meta['load_before']}, after {meta['load_after']}")
        print(goals_line(res))
        return
    live = res["live"]
    print()
    print(f"2. live channel: commit() → SSE event → PNG of that snapshot → whole first card"
          f" (server polls every {live['poll_s']} s; B={live['batch']} training, watch on)")  # fmt: skip
    head = (f"{'clients':>8}{'samples':>8}{'snaps':>6}   {'event med':>9}{'p95':>7}"
            f"   {'PNG med':>8}{'p95':>7}   {'card med':>8}{'p95':>7}{'max':>7}   (ms)")  # fmt: skip
    print(head)
    print("─" * len(head))
    for n, lat in live["latency"].items():
        if not lat["n"]:
            print(f"{n:>8}{0:>8}   no samples")
            continue
        e, p, c = lat["event"], lat["png"], lat["card"]
        print(
            f"{n:>8}{lat['n']:>8}{lat['snapshots']:>6}   {1e3 * e['median_s']:>9.0f}"
            f"{1e3 * e['p95_s']:>7.0f}   {1e3 * p['median_s']:>8.0f}{1e3 * p['p95_s']:>7.0f}"
            f"   {1e3 * c['median_s']:>8.0f}{1e3 * c['p95_s']:>7.0f}{1e3 * c['max_s']:>7.0f}"
        )
    first = next((v for v in live["latency"].values() if v["n"]), None)
    srv = live.get("server") or {}
    if srv:
        print(
            f"   server: rendered {srv['renders']} PNGs for {srv['cached']} distinct pictures"
            f" (the rest: {srv['cache_hits']} cache hits)"
        )
    if first:
        print(f"   a card = {first['pictures_per_card']} PNGs, {first['card_kib']:.0f} KiB;"
              f" client errors: {live['error_count']}; requests retried once on a kept-alive"
              f" connection the server had just closed (as browsers do): {live['retried_requests']}")  # fmt: skip
    for e in live["errors"][:3]:
        print(f"     {e}")
    print()
    print("   training throughput (watch on) with n SSE clients connected vs none")
    head = (f"{'clients':>8}{'ex/s':>8}{'ratio':>8}   {'ex/CPU-s':>9}{'ratio':>8}  {'noise':>5}"
            f"  core wait   server cores (wait≥)  client cores   goal ≥{GOAL_CLIENTS}× (20 clients)")  # fmt: skip
    print(head)
    print("─" * len(head))
    for n, t in live["throughput"].items():
        cores = live["helper_cores"].get(n) or {}
        verdict = ""
        if n == max(CLIENTS):
            verdict = f"wall {_ok(t['ratio_wall'], GOAL_CLIENTS)}, CPU {_ok(t['ratio_cpu'], GOAL_CLIENTS)}"
        print(
            f"{n:>8}{t['ex_per_s'][1]:>8.0f}{t['ratio_wall']:>7.2f}×   {t['ex_per_cpu_s'][1]:>9.0f}"
            f"{t['ratio_cpu']:>7.2f}×  {max(t['noise'], t['noise_cpu']):>5.0%}"
            f"  {cores.get('trainer_core_wait_share', 0.0):>9.0%}"
            f"   {cores.get('server', 0.0):>12.2f} ({cores.get('server_core_wait_s_per_s', 0.0):>5.2f})"
            f"  {cores.get('clients', 0.0):>12.2f}   {verdict}"
        )
    print("   core wait: share of the trainer's wall time spent waiting for a CPU; server/client"
          " cores: CPU seconds per second those processes used; wait≥: seconds per second the"
          " server's threads waited for a CPU (summed over threads)")  # fmt: skip
    print()
    print(f"3. built-in Trainer (demo settings: validation every 100 steps, snapshots every 2 s),"
          f" vs ConvNetJS ≈ {CONVNETJS_EX_PER_S:.0f} examples/s in a browser")  # fmt: skip
    head = (f"{'B':>4}{'ex/s':>8}{'× ConvNetJS':>13}   {'ex/CPU-s':>9}{'× ConvNetJS':>13}"
            f"   aim ≥{AIM_OVER_CONVNETJS:.0f}×")  # fmt: skip
    print(head)
    print("─" * len(head))
    for r in res["demo"]:
        print(
            f"{r['batch']:>4}{r['ex_per_s']:>8.0f}{r['over_convnetjs']:>12.1f}×   "
            f"{r['ex_per_cpu_s']:>9.0f}{r['over_convnetjs_cpu']:>12.1f}×"
            f"   {'ok' if r['over_convnetjs'] >= AIM_OVER_CONVNETJS else 'under'}"
        )
    print()
    if meta["load_before"] and meta["load_before"][0] >= 1.0:
        print(f"note: the machine was shared (1-min load {meta['load_before'][0]} on {meta['cpus']}"
              " CPUs): wall numbers include waiting for a core; the CPU columns are steadier")  # fmt: skip
    print(f"load average (1/5/15 min) before {meta['load_before']}, after {meta['load_after']}")
    print(goals_line(res))


def goals_line(res: dict[str, Any]) -> str:
    """One line: each goal, met or not, with the numbers that decide it."""
    parts = []
    over = res["overhead"]
    cpu = ", ".join(f"{r.get('net', NET)} B={r['batch']} {r['ratio_cpu']:.2f}×" for r in over)
    wall = ", ".join(f"{r['ratio_wall']:.2f}×" for r in over)
    met = all(min(r["ratio_cpu"], r["ratio_wall"]) >= GOAL for r in over)
    parts.append(f"watch on/off ≥ {GOAL}×: {'met' if met else 'MISSED'} (CPU {cpu}; wall {wall})")
    if "live" not in res:
        return "goals: " + "; ".join(parts)
    t = res["live"]["throughput"][max(CLIENTS)]
    wait = (res["live"]["helper_cores"].get(max(CLIENTS)) or {}).get("trainer_core_wait_share", 0.0)
    parts.append(
        f"{max(CLIENTS)} clients/none ≥ {GOAL_CLIENTS}×: CPU {t['ratio_cpu']:.2f}×"
        f" {_ok(t['ratio_cpu'], GOAL_CLIENTS)}, wall {t['ratio_wall']:.2f}× {_ok(t['ratio_wall'], GOAL_CLIENTS)}"
        f" (trainer waited for a core {wait:.0%} of the time)"
    )
    demo = res["demo"][0]
    parts.append(
        f"demo B={demo['batch']} vs ConvNetJS: {demo['over_convnetjs']:.1f}× (aim ≥"
        f" {AIM_OVER_CONVNETJS:.0f}×: {'met' if demo['over_convnetjs'] >= AIM_OVER_CONVNETJS else 'under'})"
    )
    return "goals: " + "; ".join(parts)






def _json_keys(obj: Any) -> Any:
    """int dict keys -> str (JSON), recursively."""
    if isinstance(obj, dict):
        return {str(k): _json_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_keys(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short samples, few rounds: a smoke run")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1; 0 = torch's default for this machine)")  # fmt: skip
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                    help="profile the watched steps: when a goal is missed (auto), always or never")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    ap.add_argument("--overhead-only", action="store_true", help="part 1 only (watch on vs off)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "load_before": load_average(),
        "goal": GOAL,
        "convnetjs_ex_per_s": CONVNETJS_EX_PER_S,
    }
    print(
        f"load average before: {meta['load_before']}; {meta['threads']} torch thread(s)", flush=True
    )
    t_start = time.perf_counter()
    x, y = load_data(2048)
    work = Path(tempfile.mkdtemp(prefix="convscope-bench-watch-"))
    started: list[Any] = []
    res: dict[str, Any] = {"meta": meta}
    try:
        print("1. watch on vs off, samples per round:", flush=True)
        res["overhead"] = bench_overhead(plan, x, y, work)
        missed = any(r["ratio_cpu"] < GOAL for r in res["overhead"])
        if args.profile == "always" or (args.profile == "auto" and missed):
            print("   profiling the watched steps ...", flush=True)
            res["profile"] = where_time_goes(Loop(32, x, y), work / "profile", plan.profile_steps)
        if not args.overhead_only:
            print("2. live channel (starting the dashboard and client processes):", flush=True)
            res["live"] = bench_live(plan, x, y, work, args.threads, started)
            print("3. built-in Trainer:", flush=True)
            res["demo"] = bench_demo(plan, work)
    finally:
        for proc in started:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()  # only our own child, by its handle
                proc.join(timeout=5)
        shutil.rmtree(work, ignore_errors=True)
    meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    meta["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_json_keys(res), indent=1) + "\n")
    print_report(res)
    print(f"wrote {args.out} ({meta['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
