"""Run-store numbers: commit latency and database size (not a test; pytest does not collect it).

    .venv/bin/python tests/runs/bench_store.py            # 1000 steps, default retention
    .venv/bin/python tests/runs/bench_store.py --steps 200

Each step logs 4 layers x 7 snapshot kinds of a (1, 16, 32, 32) map (z-like: normal noise;
a-like: its ReLU, half zeros), 11 layer stats per layer and 11 scalars, then commits. Prints the
mean/median/p95 time of `commit` alone and of the whole step (logging includes float16 encoding
and zlib), and run.sqlite's size at the end (after the writer closed: WAL checkpointed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from convscope.runs import Retention, RunReader, RunWriter

KINDS = ("x", "conv", "z", "a", "grad_z", "grad_a", "weight")
LAYERS = ("conv1", "conv2", "conv3", "conv4")
STATS = ("a_min", "a_max", "a_mean", "z_min", "z_max", "grad_a_min", "grad_a_max",
         "grad_a_norm", "weight_norm", "grad_weight_norm", "update_ratio")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    pool = [torch.randn(1, 16, 32, 32) for _ in range(8)]  # (1, C, H, W)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "bench"
        w = RunWriter(run, meta={"model": "bench"}, retention=Retention())
        commit_s, step_s = [], []
        for step in range(args.steps):
            t0 = time.perf_counter()
            w.log_scalars(step, {f"s{i}": float(step + i) for i in range(11)})
            for li, layer in enumerate(LAYERS):
                w.log_layer_stats(step, layer, {k: float(i) for i, k in enumerate(STATS)})
                for ki, kind in enumerate(KINDS):
                    t = pool[(step + li + ki) % len(pool)]
                    w.log_snapshot(step, layer, kind, t.relu() if kind == "a" else t)
            t1 = time.perf_counter()
            w.commit(step)
            t2 = time.perf_counter()
            commit_s.append(t2 - t1)
            step_s.append(t2 - t0)
        w.close()
        size = (run / "run.sqlite").stat().st_size
        with RunReader(run) as r:
            kept = len(r.snapshot_steps("conv1", "a"))
    ms = [1e3 * s for s in commit_s]
    print(f"steps: {args.steps}, snapshots per step: {len(LAYERS) * len(KINDS)} of (1, 16, 32, 32)")
    print(
        f"commit: mean {statistics.mean(ms):.2f} ms, median {statistics.median(ms):.2f} ms, "
        f"p95 {sorted(ms)[int(0.95 * len(ms))]:.2f} ms"
    )
    print(f"whole step (log + encode + commit): mean {1e3 * statistics.mean(step_s):.2f} ms")
    print(f"run.sqlite: {size / 2**20:.1f} MiB; snapshots kept per series: {kept}")


if __name__ == "__main__":
    main()
