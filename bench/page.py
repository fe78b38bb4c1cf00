"""Dashboard-page benchmark (issue 10, goal 4): commit → whole layer card with 1 and 20 pages open,
and what 20 open pages cost the trainer.

    make bench                                 # runs this file among the others
    .venv/bin/python bench/page.py             # about 3 minutes
    .venv/bin/python bench/page.py --quick     # about 1 minute: a smoke run

Three processes, as `convscope demo` + browsers run them (the rig is part 2 of bench/watch.py,
reused here so the two benches measure the same thing):
- the trainer: zoo:convnetjs-cifar, batch 32, SGD, `watch()` with its defaults (statistics every
  step, snapshots every 2 s); `commit()` is timed (monotonic clock, shared by the processes);
- the real dashboard app (create_app + uvicorn in a thread, DashboardServer on 127.0.0.1:0), its
  process 10 nicer, as `convscope serve` and `demo` run it (`yield_to_training`);
- N simulated pages (asyncio + httpx): each loads the run, holds the SSE stream, and on a `step`
  event with a new `snapshot_step` does what static/js/main.js + layers.js do for a visible card:
  GET /snapshots, the `a` picture of the first block at that step, then its other pictures
  (x, dL/da, W, dL/dW, z|a, dL/dz) in parallel.
Measured: commit() → the last picture of the card received, median over every (client, snapshot);
training throughput (wall and CPU) with 0, 1 and 20 pages, in interleaved samples.

Goals: card median < 0.5 s with 1 page, < 1 s with 20; throughput with 20 pages ≥ 0.95× none.
Load average before and after is printed (this machine is shared). Results: bench/results/page.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import watch as rig  # bench/watch.py: the live-channel rig (part 2)
from _timing import git_commit, load_average

RESULTS = Path(__file__).resolve().parent / "results" / "page.json"
GOAL_CARD_S = {1: 0.5, 20: 1.0}  # median commit → whole card
GOAL_THROUGHPUT = 0.95  # 20 pages / none


def report(live: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = [f"page bench ({meta['date']}, commit {meta['commit']}, load before "
             f"{meta['load_before']}, after {meta['load_after']}, poll_s {live['poll_s']})"]  # fmt: skip
    for n, goal in GOAL_CARD_S.items():
        lat = live["latency"].get(n) or {}
        card = lat.get("card")
        if card is None:
            lines.append(f"  {n:>2} page(s): no card measured (errors: {live['error_count']})")
            continue
        ev = lat.get("event", {}).get("median_s", float("nan"))
        verdict = "ok" if card["median_s"] < goal else "MISSED"
        lines.append(
            f"  {n:>2} page(s): commit → event {ev:.3f} s, → whole card median "
            f"{card['median_s']:.3f} s (p95 {card['p95_s']:.3f}, n={lat['n']}) "
            f"goal < {goal} s: {verdict}"
        )
    for n in (1, 20):
        t = live["throughput"][n]
        verdict = "ok" if t["ratio_wall"] >= GOAL_THROUGHPUT else "MISSED"
        lines.append(
            f"  training with {n:>2} page(s) / none: {t['ratio_wall']:.3f}× wall, "
            f"{t['ratio_cpu']:.3f}× CPU (noise ±{t['noise']:.1%}, {t['rounds']} rounds)"
            + (f" goal ≥ {GOAL_THROUGHPUT}×: {verdict}" if n == 20 else "")
        )
    srv = live.get("server") or {}
    cores = live.get("helper_cores", {}).get(20) or {}
    lines.append(
        f"  server: {srv.get('renders')} renders, {srv.get('cache_hits')} cache hits; with 20 "
        f"pages it used {cores.get('server', 0):.2f} cores, the clients {cores.get('clients', 0):.2f}"
    )
    if live["error_count"]:
        lines.append(f"  {live['error_count']} client errors, first: {live['errors'][:3]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short samples, few rounds: a smoke run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = rig.QUICK if args.quick else rig.FULL
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "load_before": load_average(),
    }
    print(f"load average before: {meta['load_before']}", flush=True)
    t0 = time.perf_counter()
    x, y = rig.load_data(2048)
    work = Path(tempfile.mkdtemp(prefix="convscope-bench-page-"))
    started: list[Any] = []
    try:
        live = rig.bench_live(plan, x, y, work, args.threads, started)
    finally:
        for proc in started:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()  # only our own child, by its handle
                proc.join(timeout=5)
        shutil.rmtree(work, ignore_errors=True)
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rig._json_keys({"meta": meta, "live": live}), indent=1) + "\n")
    print("\n".join(report(live, meta)))
    print(f"wrote {args.out} ({meta['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
