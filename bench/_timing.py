"""Shared timing helpers for convscope's benchmarks (bench/*.py): interleaved, median-of-repeats.

    from _timing import Contender, compare
    timings = compare([Contender("plain", lambda: model(x)), Contender("probe", probed)],
                      repeats=7, warmup=1)
    timings["probe"].median / timings["plain"].median      # seconds per call, as a ratio

How it measures, so noise on a shared machine hits every contender alike:
- warmup: each contender runs `warmup` times first (lazy init, allocator, caches);
- calibration: each contender gets its own `number` of calls per sample, so that one sample
  lasts at least `min_sample_s` (a 0.5 ms forward is timed 40 at a time, a 2 s one once);
- interleaving: round r times one sample of every contender (A B C, then B C A, then C A B:
  the start rotates so no contender always runs right after the same neighbour);
- per sample: `gc.collect()`, then optional untimed `setup`/`teardown` around it (e.g. install
  and remove a peer library's global patches), and the garbage collector off during the timed
  calls (as `timeit` does);
- result: per-call seconds of every sample; report the median (robust to a noisy neighbour),
  with the inter-quartile spread as a noise gauge. Each sample also records this process's CPU
  seconds per call (`cpu_samples`, all its threads): on a machine shared with other work the
  CPU time is the steadier measure of what the calls cost (wall time includes waiting for a core).
A time budget stops the rounds early (never below `min_repeats`) so a slow machine still
finishes a run in bounded time.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Contender:
    """One thing to time: `fn()` is one call; `setup`/`teardown` run untimed around each sample."""

    name: str
    fn: Callable[[], object]
    setup: Callable[[], object] | None = None  # e.g. patch a library in; None = nothing
    teardown: Callable[[], object] | None = None  # undo `setup`; runs even if `fn` raises


@dataclass
class Timing:
    """Per-call seconds of each sample of one contender."""

    name: str
    number: int  # calls per sample (from calibration)
    samples: list[float] = field(default_factory=list)  # seconds per call, one per round
    cpu_samples: list[float] = field(default_factory=list)  # process CPU s per call, same rounds

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples)

    @property
    def cpu_spread(self) -> float:
        """Like `spread`, of the CPU seconds."""
        return _spread(self.cpu_samples)

    @property
    def spread(self) -> float:
        """Inter-quartile range relative to the median (0.05 = the middle half within ±2.5 %)."""
        return _spread(self.samples)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "median_s": self.median,
            "spread": self.spread,
            "number": self.number,
            "samples_s": self.samples,
        }
        if self.cpu_samples:
            out |= {"cpu_median_s": self.cpu_median, "cpu_samples_s": self.cpu_samples}
        return out


class Away:
    """Clocks that leave out the time spent away from one contender: its recorder
    (`Recorder(..., **away.clocks())`, then `away.follow(recorder.writer)`) then plans, earns and
    spends as in a run of its own, though another
    contender's samples ran between its own (bench/watch.py, bench/watch_gap.py; docs/speed.md
    says what those samples did to a recorder on the real clocks). `leave()` where the contender
    stops, `back()` where it starts again (a `Contender`'s teardown and setup: `_measure` collects
    garbage before the setup, so that is left out too). The CPU clock leaves out the main thread's
    CPU only: the recorder's writer thread's work meanwhile (`writer_cpu`, its thread clock) is
    still the recorder's, which reads that clock itself."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0  # seconds out of the clocks so far
        self.writer_cpu: Callable[[], float] = lambda: 0.0  # the recorder's writer thread's CPU s
        self._mark: tuple[float, float, float] | None = None

    def leave(self) -> None:
        self._mark = (time.perf_counter(), time.process_time(), self.writer_cpu())

    def back(self) -> None:
        if self._mark is not None:
            wall, cpu, writer = self._mark
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu - (self.writer_cpu() - writer)
            self._mark = None

    def clock(self) -> float:
        return time.perf_counter() - self.wall

    def cpu_clock(self) -> float:
        return time.process_time() - self.cpu

    def clocks(self) -> dict[str, Callable[[], float]]:
        """A `Recorder`'s clocks: the loop's on these; step()'s own time on its thread's clock, as
        `watch()` reads it (only ever a difference within one call: no time away in it). A
        `cpu_clock` given alone would drive both, and charge step() the writer thread's CPU folded
        into the process clock at the tick (docs/speed.md, "The bench's recorder")."""
        return {"clock": self.clock, "cpu_clock": self.cpu_clock, "thread_clock": time.thread_time}

    def follow(self, writer: Any) -> None:
        """Leave the recorder's writer thread's CPU in its clock (`writer`: its `RunWriter`)."""
        self.writer_cpu = lambda: writer.background_cpu_split[0]


def _spread(samples: list[float]) -> float:
    mid = statistics.median(samples)
    if len(samples) < 4:
        return (max(samples) - min(samples)) / mid
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return (q3 - q1) / mid


def _sample(c: Contender, number: int) -> float:
    """Seconds per call over `number` back-to-back calls, setup/teardown and gc outside."""
    return _measure(c, number)[0]


def _measure(c: Contender, number: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call over `number` back-to-back calls. The garbage
    collection comes before `setup`, so a setup that starts a clock again (`Away.back`) does
    not count it (a full collection walks every object: ~0.1 s in a process with torch loaded)."""
    gc.collect()
    if c.setup is not None:
        c.setup()
    try:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(number):
                c.fn()
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - c0
        finally:
            if was_enabled:
                gc.enable()
    finally:
        if c.teardown is not None:
            c.teardown()
    return elapsed / number, cpu / number


def calibrate(c: Contender, min_sample_s: float, *, one: float | None = None) -> int:
    """Calls per sample so that one sample lasts at least `min_sample_s` (1 for slow calls).
    `one`: seconds of a single call already measured (e.g. the last warmup), to save a call."""
    if one is None:
        one = _sample(c, 1)
    if one >= min_sample_s:
        return 1
    few = max(1, math.ceil(0.01 / max(one, 1e-7)))  # re-measure over ~10 ms: one call is too coarse
    per_call = _sample(c, few)
    return max(1, math.ceil(min_sample_s / max(per_call, 1e-7)))


def compare(
    contenders: Sequence[Contender],
    *,
    repeats: int,
    warmup: int = 1,
    min_sample_s: float = 0.05,
    min_repeats: int = 3,
    budget_s: float | None = None,
    on_round: Callable[[int], object] | None = None,
) -> dict[str, Timing]:
    """Time `contenders` interleaved over up to `repeats` rounds; stop after `budget_s` seconds
    of rounds (never before `min_repeats` rounds). Returns {name: Timing} in contender order."""
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must be unique, got {names}")
    if repeats < 1 or min_repeats < 1:
        raise ValueError("repeats and min_repeats must be >= 1")
    timings: dict[str, Timing] = {}
    for c in contenders:
        last = None
        for _ in range(warmup):
            last = _sample(c, 1)
        timings[c.name] = Timing(c.name, calibrate(c, min_sample_s, one=last))
    start = time.perf_counter()
    n = len(contenders)
    for r in range(repeats):
        for k in range(n):
            c = contenders[(r + k) % n]
            wall, cpu = _measure(c, timings[c.name].number)
            timings[c.name].samples.append(wall)
            timings[c.name].cpu_samples.append(cpu)
        if on_round is not None:
            on_round(r + 1)
        over = budget_s is not None and time.perf_counter() - start > budget_s
        if over and r + 1 >= min(min_repeats, repeats):
            break
    return timings


def paired(num: Sequence[float], den: Sequence[float]) -> float:
    """The median over rounds of num[r] / den[r]: two contenders' samples of one round ran close
    together (`compare` interleaves them), so a slow spell of a shared machine, seconds long,
    slows both and cancels in the round's own ratio, where it moves a ratio of two medians."""
    return statistics.median(n / d for n, d in zip(num, den, strict=True))


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (a shared machine's noise), None where unknown."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def git_commit() -> str | None:
    """The short commit the benchmark ran on, None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()
