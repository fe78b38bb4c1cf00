"""What one `run.step()` of watch() costs in a real training loop, by the kind of step it was, and how
often the budget affords statistics (issue 10, goal 1: where the recorder's 3% goes).

    .venv/bin/python bench/recorder_step.py                 # batch 32 and 64, about a minute
    .venv/bin/python bench/recorder_step.py --batch 32 --steps 600

zoo:convnetjs-cifar, SGD, one torch thread, random data. Each step() is timed right after the
training step that precedes it (as in a user's loop: the recorder's objects are then cold in the
CPU cache), and, for comparison, the same call with nothing between two calls (warm). Printed per
kind of step (plain / statistics / snapshot): the median wall and thread-CPU microseconds of
step(), the count; then statistics per second, the run writer thread's CPU per step and the
recorder's own measured share of the step time. No goal is asserted: bench/speed.py has them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import convscope as cs
from convscope.models.zoo import ZOO


def measure(batch: int, steps: int) -> None:
    torch.manual_seed(0)
    model = ZOO["convnetjs-cifar"].factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xs, ys = torch.randn(batch * 20, 3, 32, 32), torch.randint(0, 10, (batch * 20,))

    def train(i: int) -> torch.Tensor:
        k = i % 20
        loss = F.cross_entropy(model(xs[k * batch : (k + 1) * batch]), ys[k * batch : (k + 1) * batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    with tempfile.TemporaryDirectory() as tmp:
        run = cs.watch(model, Path(tmp) / "run")
        for i in range(50):  # past the first steps (layer table, first snapshot, first estimates)
            run.step(loss=train(i))
        by_kind: dict[str, list[tuple[float, float]]] = {}
        writer0, t0 = run.writer.background_cpu_s, time.perf_counter()
        stats0 = run.budget.total.stats_steps
        for i in range(steps):
            loss = train(i)
            kind = run._plan  # what this step records (planned before its forward)
            w, c = time.perf_counter(), time.thread_time()
            run.step(loss=loss)
            by_kind.setdefault(kind, []).append((time.perf_counter() - w, time.thread_time() - c))
        wall_s = time.perf_counter() - t0
        writer_ms = 1e3 * (run.writer.background_cpu_s - writer0) / steps
        total = run.budget.total  # (steps that coasted since the last full one: not counted yet)
        share = total.cost_s / total.train_s if total.train_s else float("nan")
        stats_hz = (total.stats_steps - stats0) / wall_s
        warm = []
        for _ in range(200):  # nothing between two calls: the same objects, warm
            w = time.perf_counter()
            run.step(loss=1.0)
            warm.append(time.perf_counter() - w)
        run.close()
    print(f"convnetjs-cifar B={batch}: {steps} steps in {wall_s:.1f} s")
    for kind, rows in sorted(by_kind.items()):
        wall = 1e6 * statistics.median(r[0] for r in rows)
        cpu = 1e6 * statistics.median(r[1] for r in rows)
        print(f"  {kind:>9} step(): {wall:8.1f} µs wall, {cpu:8.1f} µs thread CPU (median of {len(rows)})")
    print(f"  warm step() (no training between calls): {1e6 * statistics.median(warm):.1f} µs")
    print(f"  statistics {stats_hz:.2f} per second; writer thread {writer_ms:.3f} ms CPU per step; "
          f"recorder's measured share {100 * share:.2f}%")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 32 and 64)")
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for b in args.batch or [32, 64]:
        measure(b, args.steps)


if __name__ == "__main__":
    main()
