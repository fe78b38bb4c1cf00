"""Run-store benchmark: what recording a step costs the training thread, with the writer thread
(the default) and without it (`background=False`: every commit compresses and writes in the
caller's thread, as the store did before), and whether retention thinning still makes spikes.

    make bench                                # all benches, this one included
    .venv/bin/python bench/store.py           # 700 steps per contender (about 2 minutes)
    .venv/bin/python bench/store.py --quick   # 450 steps: still past the first thinning

Each step logs what `watch()` logs on a 4-block net when a snapshot is due: 11 scalars, 11 layer
stats per block, and 7 snapshot kinds per block of a (1, 16, 32, 32) map (z-like normal noise;
a-like its ReLU, half zeros), then commits; retention is the default (series thinned past 400
snapshots: from step ~400 on, every ~50 steps), the byte budget the default 1 GB. The two
contenders run interleaved in blocks of 50 steps on runs of their own (inline, thread, thread,
inline, ...), so machine noise hits both; each block ends with a flush, so the writer thread
never writes while the other contender runs (the flush is in the block's wall and CPU totals:
the thread's work is counted there, not in the commit and step latencies).

Printed per contender: `commit()` latency p50 / p99 / max, the whole step (log + commit) p50 /
p99, and CPU seconds per step of the whole process (all threads: the writer thread's compression
and SQLite work counts) beside wall. For the writer thread also its transactions (p50 / p99 ms
and steps per transaction: time the training thread does not wait for). Goal (issue 10): commit
p99 < 20 ms. Results go to bench/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convscope.runs import RunWriter

KINDS = ("x", "conv", "z", "a", "grad_z", "grad_a", "weight")
LAYERS = ("conv1", "conv2", "conv3", "conv4")
STATS = ("a_min", "a_max", "a_mean", "z_min", "z_max", "grad_a_min", "grad_a_max",
         "grad_a_norm", "weight_norm", "grad_weight_norm", "update_ratio")  # fmt: skip
BLOCK = 50  # steps per interleaved block
GOAL_P99_MS = 20.0


@dataclass
class Contender:
    name: str
    writer: RunWriter
    commit_ms: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    step: int = 0


def q(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def run_block(c: Contender, pool: list[torch.Tensor], n: int) -> None:
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        step = c.step
        t0 = time.perf_counter()
        c.writer.log_scalars(step, {f"s{i}": float(step + i) for i in range(11)})
        for li, layer in enumerate(LAYERS):
            c.writer.log_layer_stats(step, layer, {k: float(i) for i, k in enumerate(STATS)})
            for ki, kind in enumerate(KINDS):
                t = pool[(step + li + ki) % len(pool)]
                c.writer.log_snapshot(step, layer, kind, t.relu() if kind == "a" else t)
        t1 = time.perf_counter()
        c.writer.commit(step)
        t2 = time.perf_counter()
        c.commit_ms.append(1e3 * (t2 - t1))
        c.step_ms.append(1e3 * (t2 - t0))
        c.step += 1
    c.writer.flush()  # (the thread contender's queue: untimed below)
    c.wall_s += time.perf_counter() - w0
    c.cpu_s += time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=700, help="steps per contender")
    ap.add_argument("--quick", action="store_true", help="450 steps per contender")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "store.json")
    args = ap.parse_args()
    steps = 450 if args.quick else args.steps
    torch.manual_seed(0)
    torch.set_num_threads(1)
    pool = [torch.randn(1, 16, 32, 32) for _ in range(8)]  # (1, C, H, W)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        inline = Contender("inline (before)", RunWriter(Path(tmp) / "inline", background=False))
        thread = Contender("writer thread", RunWriter(Path(tmp) / "thread"))
        order = [inline, thread]
        for b in range(0, steps, BLOCK):
            for c in order if (b // BLOCK) % 2 == 0 else order[::-1]:
                run_block(c, pool, min(BLOCK, steps - b))
        txn_ms = [1e3 * s for s in thread.writer.txn_seconds]
        sizes = {c.name: (Path(tmp) / ("inline" if c is inline else "thread") / "run.sqlite").stat().st_size
                 for c in order}  # fmt: skip
        for c in order:
            c.writer.close()
    load_after = os.getloadavg()
    print(f"run store: {steps} steps per contender, {len(LAYERS) * len(KINDS)} snapshots of (1, 16, 32, 32) "
          f"per step, blocks of {BLOCK} interleaved; load {load_before[0]:.1f} -> {load_after[0]:.1f}")  # fmt: skip
    print(f"{'':17} {'commit p50':>10} {'p99':>8} {'max':>8} | {'step p50':>9} {'p99':>8} | "
          f"{'wall/step':>9} {'CPU/step':>9}")  # fmt: skip
    rows = {}
    for c in order:
        row = {
            "commit_p50_ms": q(c.commit_ms, 0.5), "commit_p99_ms": q(c.commit_ms, 0.99),
            "commit_max_ms": max(c.commit_ms), "step_p50_ms": q(c.step_ms, 0.5),
            "step_p99_ms": q(c.step_ms, 0.99), "wall_ms_per_step": 1e3 * c.wall_s / c.step,
            "cpu_ms_per_step": 1e3 * c.cpu_s / c.step, "db_bytes": sizes[c.name],
        }  # fmt: skip
        rows[c.name] = row
        print(f"{c.name:17} {row['commit_p50_ms']:8.2f}ms {row['commit_p99_ms']:6.2f}ms "
              f"{row['commit_max_ms']:6.1f}ms | {row['step_p50_ms']:7.2f}ms {row['step_p99_ms']:6.2f}ms | "
              f"{row['wall_ms_per_step']:7.2f}ms {row['cpu_ms_per_step']:7.2f}ms")  # fmt: skip
    a, b = rows["writer thread"], rows["inline (before)"]
    print(f"ratio thread/inline: commit p99 {a['commit_p99_ms'] / b['commit_p99_ms']:.3f}x, "
          f"step p50 {a['step_p50_ms'] / b['step_p50_ms']:.2f}x, step p99 {a['step_p99_ms'] / b['step_p99_ms']:.2f}x, "
          f"wall/step {a['wall_ms_per_step'] / b['wall_ms_per_step']:.2f}x, "
          f"CPU/step {a['cpu_ms_per_step'] / b['cpu_ms_per_step']:.2f}x")  # fmt: skip
    print(f"writer thread: {len(txn_ms)} transactions, p50 {q(txn_ms, 0.5):.1f} ms, p99 {q(txn_ms, 0.99):.1f} ms, "
          f"max {max(txn_ms):.1f} ms, {steps / len(txn_ms):.1f} steps each (not waited for by training)")  # fmt: skip
    ok = a["commit_p99_ms"] < GOAL_P99_MS
    print(f"goal commit p99 < {GOAL_P99_MS:g} ms: {a['commit_p99_ms']:.2f} ms {'MET' if ok else 'MISSED'} "
          f"(inline, as before: {b['commit_p99_ms']:.1f} ms)")  # fmt: skip
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "steps": steps, "block": BLOCK, "load_before": load_before, "load_after": load_after,
        "results": rows, "txn_ms": {"p50": q(txn_ms, 0.5), "p99": q(txn_ms, 0.99), "n": len(txn_ms)},
        "goal_commit_p99_ms": GOAL_P99_MS, "met": ok,
    }, indent=1))  # fmt: skip
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
