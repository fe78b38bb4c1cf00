"""The built-in trainer's recorder, step by step: what its plain steps cost and how often statistics come.

    .venv/bin/python bench/trainer_cadence.py                       # 20 s, one thread
    .venv/bin/python bench/trainer_cadence.py --seconds 20 --threads 2
    PYTHONPATH=/other/checkout/src .venv/bin/python bench/trainer_cadence.py --label old   # an A/B

The trainer (zoo:convnetjs-cifar, batch 32, the demo's settings) trains alone for --seconds after
100 warm-up steps; printed: the mean thread CPU of `Recorder.step()` on a plain step (a step that
coasts and one that plans, together), the run writer thread's CPU per step, per-layer statistics
per second and steps per second. For an A/B of two checkouts run it alternately, several times
each (the machine's speed moves the numbers by ~10% between runs). No goal is asserted here:
bench/trainer.py's cadence phase and bench/speed.py have the goal (>= 4 statistics a second).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from trainer import cadence

from convscope.config import TrainConfig
from convscope.train.loop import Trainer
from convscope.train.watch import Recorder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--label", default="this checkout")
    args = ap.parse_args()
    recorder_class: Any = Recorder
    step = recorder_class.step
    plain: list[float] = []
    on = [False]

    def timed_step(self: Any, *a: Any, **k: Any) -> int:
        if not on[0] or self._plan != "plain":
            return int(step(self, *a, **k))
        c = time.thread_time()
        try:
            return int(step(self, *a, **k))
        finally:
            plain.append(time.thread_time() - c)

    recorder_class.step = timed_step
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(TrainConfig(batch_size=32, train_size=4096, seed=0, threads=args.threads), Path(tmp) / "run")
        for _ in range(100):
            trainer.train_step()
        rec = trainer.recorder
        writer0, steps0 = rec.writer.background_cpu_s, rec.step_index
        on[0] = True
        live = cadence(trainer, args.seconds)  # (bench/trainer.py's: the same tally, the same count)
        on[0] = False
        steps = rec.step_index - steps0
        writer_us = 1e6 * (rec.writer.background_cpu_s - writer0) / steps
        rec.close()
    print(f"{args.label}: plain step() {1e6 * statistics.mean(plain):.1f} µs mean thread CPU (n={len(plain)}),"
          f" writer {writer_us:.0f} µs/step, statistics {live['stats_hz']:.2f} Hz, {steps / live['seconds']:.0f} steps/s"
          f" ({args.threads} thread(s), {live['seconds']:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
