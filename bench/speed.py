"""Issue 10 in one table: every speed goal of the live path, over several runs of its bench, with the spread.

    make bench                            # runs this after the other benches (3 runs each)
    .venv/bin/python bench/speed.py       # the seven benches below, 3 runs each (about 60 minutes)
    .venv/bin/python bench/speed.py --runs 1 --quick   # a smoke run
    .venv/bin/python bench/speed.py --only capture,trainer

Runs, each in its own process, N times in turn (capture, watch, trainer, page, store, capture, ...):
  capture   bench/capture.py --threads 1       goal 3: full capture / plain pass (wall and CPU)
  watch     bench/watch.py --overhead-only     goal 1: watch() on / off throughput, stats cadence
  watch-gap bench/watch_gap.py                 goal 1 again (CPU): the two loops alternate in blocks of
            8 steps in one process, so the machine's slow spells cancel (bench/watch.py's 2-second
            samples move by a few percent); beside it, the share the recorder measured for itself
  trainer   bench/trainer.py                   goal 2: Trainer / bare loop, examples per second (its own
            thread choice with no page watching: every free core, train/threads.py); goal 1's
            live cadence of the Trainer alone (statistics per second, seconds between snapshots)
  trainer-watched  bench/trainer.py --watched  goal 2 while a page watches (the Trainer leaves a core
            to the dashboard server: one thread on 2 cores); its examples per second are shown
  page      bench/page.py                      goal 4: commit → whole card, 1 and 20 pages; throughput
  store     bench/store.py                     goal 5: commit p99
Each writes its JSON under bench/results/speed/RUN/; this file reads them back and prints, per goal
and case, every run's value, the spread (min–max) and the verdict: "met" when every run meets it,
"median" when the median run does, else MISSED. Each bench's own output (ratios in one run,
interleaved with its baseline, load average before/after) is in bench/results/speed/RUN/NAME.log;
the table is also written to bench/results/speed/summary.log.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "speed"
BENCHES: dict[str, list[str]] = {
    "capture": ["capture.py", "--threads", "1"],
    "watch": ["watch.py", "--overhead-only", "--profile", "never"],
    "watch-gap": ["watch_gap.py", "--batch", "32", "64", "--steps", "1600"],
    "trainer": ["trainer.py"],
    "trainer-watched": ["trainer.py", "--watched"],
    "page": ["page.py"],
    "store": ["store.py"],
}


@dataclass(frozen=True)
class Row:
    goal: str
    case: str
    target: float | None  # None: shown, no goal
    higher: bool  # True: the value must be >= target; False: <= (or < for latency)
    read: Callable[[dict[str, Any]], float | None]
    unit: str = "×"


def _capture_rows(data: dict[str, Any]) -> list[Row]:
    rows = []
    for r in data["results"]:
        limit = data["meta"]["goal_probe_over_plain"] if r["batch"] >= 4 else data["meta"]["goal_probe_over_plain_batch1"]
        for p in ("fwd", "fwd+bwd"):
            for clock, key in (("wall", "probe/plain"), ("CPU", "probe/plain cpu")):
                net, b = r["net"], r["batch"]

                def read(d: dict[str, Any], net: str = net, b: int = b, p: str = p, key: str = key) -> float | None:
                    hit = [x for x in d["results"] if x["net"] == net and x["batch"] == b]
                    return hit[0]["passes"][p][key] if hit else None

                rows.append(Row("3 full capture ≤", f"{net} B={b} {p} {clock}", limit, False, read))
    return rows


def _watch_rows(data: dict[str, Any]) -> list[Row]:
    rows = []
    for r in data["overhead"]:
        net, b = r["net"], r["batch"]
        for clock in ("wall", "cpu"):

            def read(d: dict[str, Any], net: str = net, b: int = b, clock: str = clock) -> float | None:
                hit = [x for x in d["overhead"] if x["net"] == net and x["batch"] == b]
                return hit[0][f"ratio_{clock}"] if hit else None

            rows.append(Row("1 watch on/off ≥", f"{net} B={b} {clock}", 0.97, True, read))

        def cadence(d: dict[str, Any], net: str = net, b: int = b) -> float | None:
            hit = [x for x in d["overhead"] if x["net"] == net and x["batch"] == b]
            if not hit or not hit[0]["recording"]["stats_steps"]:
                return None
            rec = hit[0]["recording"]  # over the timed watched steps (older results: every watched step)
            steps, stats = rec.get("timed_steps", rec["steps"]), rec.get("timed_stats_steps", rec["stats_steps"])
            if not stats:
                return None
            seconds_per_step = hit[0]["timings"]["watch on"]["median_s"]
            interval = steps / stats * seconds_per_step
            return float(interval / max(0.25, seconds_per_step))  # ≤ 1: every 0.25 s (or every step)

        rows.append(Row("1 stats interval / 0.25 s ≤", f"{net} B={b} (or / one step, if longer)", 1.0, False, cadence))

        def weights(d: dict[str, Any], net: str = net, b: int = b) -> float | None:
            hit = [x for x in d["overhead"] if x["net"] == net and x["batch"] == b]
            rec = hit[0]["recording"] if hit else {}
            if not rec.get("timed_weight_stats_steps"):
                return None
            return float(rec["timed_steps"] / rec["timed_weight_stats_steps"])  # steps per one with ‖W‖, ‖dL/dW‖, ΔW

        rows.append(Row("1 weights' side every … steps", f"{net} B={b} (‖W‖, ‖dL/dW‖, update ratio)", None, False,
                        weights, " steps"))  # fmt: skip
    return rows


def _gap_rows(data: dict[str, Any]) -> list[Row]:
    """bench/watch_gap.py: the watched and unwatched loops alternate in blocks of 8 steps in one
    process (CPU of the training thread, plus the writer thread's for the watched one), so a slow
    spell of the machine slows both: the same goal as the watch rows, with less of the noise."""
    rows = []
    for r in data["gap"]:
        b = r["batch"]

        def read(d: dict[str, Any], b: int = b, key: str = "on_off", scale: float = 1.0) -> float | None:
            hit = [x for x in d["gap"] if x["batch"] == b]
            return scale * float(hit[0][key]) if hit else None

        rows.append(Row("1 watch on/off ≥", f"{r['net']} B={b} cpu, alternating blocks", 0.97, True, read))
        rows.append(Row("1 recorder's own share", f"{r['net']} B={b} (measured by itself, of ≤ 3%)", None, False,
                        partial(read, key="measured_share", scale=100.0), "%"))  # fmt: skip
    return rows


def _trainer_rows(data: dict[str, Any]) -> list[Row]:
    """The Trainer's own thread choice; while a page watches, its examples per second are shown
    (one thread on 2 cores: the bare loop's own ~2,500 is the limit) and the ratios are the goal."""
    meta = data["meta"]
    watched = meta.get("watched", False)
    case = f"convnetjs-cifar B=32, {'a page' if watched else 'no page'}, {meta['threads']} thr,"
    alone = f"alone {data['cadence']['seconds']:.0f} s" if "cadence" in data else "alone"  # (as the demo runs it)
    return [
        Row("2 Trainer / bare ≥", f"{case} wall", 0.9, True, lambda d: d["ratio"]["wall"]),
        Row("2 Trainer / bare ≥", f"{case} CPU", 0.9, True, lambda d: d["ratio"]["cpu"]),
        Row("2 Trainer ex/s ≥", f"{case} wall", None if watched else 3000, True,
            lambda d: d["ex_per_s"]["trainer"]["wall"], " ex/s"),
        Row("1 Trainer statistics ≥", f"{case} {alone}", 4.0, True,
            lambda d: d["cadence"]["stats_hz"] if "cadence" in d else None, " Hz"),
        Row("1 Trainer snapshots every …", f"{case} {alone}", None, False,
            lambda d: d["cadence"]["snapshot_every_s"] if "cadence" in d else None, " s"),
    ]  # fmt: skip


def _page_rows(data: dict[str, Any]) -> list[Row]:
    live = lambda d: d["live"]  # noqa: E731
    return [
        Row("4 commit → card <", "1 page, median", 0.5, False, lambda d: live(d)["latency"]["1"]["card"]["median_s"], " s"),
        Row("4 commit → card <", "20 pages, median", 1.0, False, lambda d: live(d)["latency"]["20"]["card"]["median_s"], " s"),
        Row("4 throughput 20 pages / none ≥", "wall", 0.95, True, lambda d: live(d)["throughput"]["20"]["ratio_wall"]),
        Row("4 throughput 20 pages / none ≥", "CPU", 0.95, True, lambda d: live(d)["throughput"]["20"]["ratio_cpu"]),
    ]  # fmt: skip


def _store_rows(data: dict[str, Any]) -> list[Row]:
    return [Row("5 commit p99 <", "writer thread", 20.0, False,
                lambda d: d["results"]["writer thread"]["commit_p99_ms"], " ms")]  # fmt: skip


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "capture": _capture_rows, "watch": _watch_rows, "watch-gap": _gap_rows, "trainer": _trainer_rows,
    "trainer-watched": _trainer_rows,
    "page": _page_rows, "store": _store_rows,
}  # fmt: skip


def run_all(names: list[str], runs: int, quick: bool) -> None:
    for i in range(1, runs + 1):
        for name in names:
            folder = OUT / str(i)
            folder.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, str(HERE / BENCHES[name][0]), *BENCHES[name][1:], "--out", str(folder / f"{name}.json")]
            if quick:
                cmd.append("--quick")
            t0 = time.perf_counter()
            print(f"run {i}/{runs}: {name} ... ", end="", flush=True)
            with open(folder / f"{name}.log", "w") as log:
                done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HERE, check=False)
            print(f"{time.perf_counter() - t0:.0f} s{'' if done.returncode == 0 else f' (exit {done.returncode})'}", flush=True)


def _meets(row: Row, v: float) -> bool:
    """Ratios: ≥ or ≤ the target; latencies and rates: strictly below (the issue's "<")."""
    if row.target is None:
        return True
    if row.higher:
        return v >= row.target
    return v <= row.target if row.unit == "×" else v < row.target


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}{unit}" if unit == " ex/s" else f"{v:.2f}{unit}"


def report(names: list[str]) -> int:
    runs = sorted((p for p in OUT.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) if OUT.is_dir() else []
    missed = 0
    lines: list[str] = []

    def say(line: str = "") -> None:
        lines.append(line)
        print(line)

    say(f"\nissue 10 — the live path at full speed: {len(runs)} run(s) of each bench (bench/results/speed/)")
    head = f"{'goal':<32} {'case':<50} {'target':>9}  {'runs':<30} {'spread':<16} verdict"
    say(head)
    say("─" * len(head))
    for name in names:
        datas = [json.loads((r / f"{name}.json").read_text()) for r in runs if (r / f"{name}.json").is_file()]
        if not datas:
            say(f"{name}: no results (run it first)")
            missed += 1
            continue
        for row in ROWS[name](datas[-1]):
            values = [v for v in (row.read(d) for d in datas) if v is not None]
            ok_each = [_meets(row, v) for v in values]
            if not values:
                verdict = "no value"
            elif row.target is None:
                verdict = "(shown)"
            elif all(ok_each):
                verdict = "met"
            else:
                verdict = "met by the median run" if _meets(row, statistics.median(values)) else "MISSED"
            missed += verdict in ("MISSED", "no value")
            shown = ", ".join(_fmt(v, row.unit) for v in values)
            spread = f"{_fmt(min(values), row.unit)}–{_fmt(max(values), row.unit)}" if values else ""
            target = _fmt(row.target, row.unit)
            say(f"{row.goal:<32} {row.case:<50} {target:>9}  {shown:<30} {spread:<16} {verdict}")
    say(f"\n{missed} row(s) missed" if missed else "\nevery row met")
    if runs and names == list(BENCHES):  # (a subset's table is no summary)
        (OUT / "summary.log").write_text("\n".join(lines).lstrip("\n") + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3, help="runs of each bench (default 3)")
    ap.add_argument("--quick", action="store_true", help="each bench's --quick: a smoke run")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--report-only", action="store_true", help="print the table from the results on disk")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown bench(es) {unknown}; choose from {', '.join(BENCHES)}")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if not args.report_only:
        for old in OUT.glob("*/"):
            if old.name.isdigit() and int(old.name) > args.runs:
                for f in old.iterdir():
                    f.unlink()
                old.rmdir()
        run_all(names, args.runs, args.quick)
    return report(names)


if __name__ == "__main__":
    sys.exit(main())
