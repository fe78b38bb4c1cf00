"""What watch() truly costs a training loop, measured so that a noisy machine's slow spells cancel
(issue 10, goal 1): an unwatched and a watched copy of one model train in one process, alternating
in blocks of K steps; the watched recorder runs on clocks that leave out the unwatched steps, so it
plans, earns and spends as in a run of its own.

    .venv/bin/python bench/watch_gap.py                  # batch 32 and 64, 960 steps each, K=8
    .venv/bin/python bench/watch_gap.py --batch 64 --steps 400 --block 1

zoo:convnetjs-cifar, SGD with momentum, random data, one torch thread, watch() with its defaults.
Printed per batch: the mean step of each loop (this thread's CPU; the watched one plus its writer
thread's CPU), the true cost (on / off - 1) and on/off, beside the share the recorder measured for
itself over the same steps, and the watched steps by kind (plain, stats, snapshot): how many and
their mean CPU over the unwatched mean. bench/watch.py times 2-second samples of each loop (a
slow spell of the machine moves its ratios by a few percent); this file takes many short blocks.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import Away

from convscope.models.zoo import ZOO
from convscope.train.watch import Recorder

NET = "convnetjs-cifar"


def measure(batch: int, steps: int, block: int) -> str:
    torch.manual_seed(0)
    base = ZOO[NET].factory()
    xs = torch.randn(batch * 8, *ZOO[NET].input_shape)
    ys = torch.randint(0, 10, (batch * 8,))
    away = Away()  # the unwatched steps: out of the recorder's clocks
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: copy.deepcopy(base) for name in ("off", "on")}
        opts = {
            name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            for name, m in models.items()
        }
        run = Recorder(models["on"], Path(tmp) / "run", clock=away.clock, cpu_clock=away.cpu_clock)
        run_writer = run.writer
        away.writer_cpu = lambda: run_writer.background_cpu_split[0]
        off: list[float] = []
        on: dict[str, list[float]] = {}

        def one(name: str, i: int, timed: bool) -> None:
            kind = run._plan if name == "on" else "plain"
            if name == "off":
                away.leave()
            cpu = time.thread_time()
            k = i % 8
            loss = F.cross_entropy(
                models[name](xs[k * batch : (k + 1) * batch]), ys[k * batch : (k + 1) * batch]
            )
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if name == "on":
                run.step(loss=loss)
            spent = time.thread_time() - cpu
            if name == "off":
                away.back()
            if timed:
                (off if name == "off" else on.setdefault(kind, [])).append(spent)

        for i in range(60):  # the recorder's first steps (layer table, first costs)
            one("off", i, False)
            one("on", i, False)
        writer0, total0 = (
            run.writer.background_cpu_split[0],
            (run.budget.total.train_s, run.budget.total.cost_s),
        )
        for j in range(0, steps, block):
            for name in ("off", "on") if (j // block) % 2 else ("on", "off"):
                for i in range(j, j + block):
                    one(name, i, True)
        writer = run.writer.background_cpu_split[0] - writer0
        train = run.budget.total.train_s - total0[0]
        cost = run.budget.total.cost_s - total0[1]
        run.close()
    off_ms = 1e3 * statistics.mean(off)
    on_ms = 1e3 * (sum(sum(v) for v in on.values()) + writer) / sum(len(v) for v in on.values())
    lines = [
        f"{NET} B={batch}, {steps} steps a loop in blocks of {block}: off {off_ms:.2f} ms a step, on {on_ms:.2f}"
        f" (its writer thread {1e3 * writer / steps:.3f}); true cost {100 * (on_ms / off_ms - 1):+.2f}%,"
        f" on/off {off_ms / on_ms:.4f}; the recorder measured {100 * cost / train:.2f}% for itself"
    ]
    for kind, v in sorted(on.items()):
        lines.append(
            f"    {kind:>8}: {len(v):5d} steps, {1e3 * statistics.mean(v) - off_ms:+8.3f} ms over off"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--steps", type=int, default=960, help="timed steps of each loop")
    ap.add_argument("--block", type=int, default=8, help="steps of one loop before the other's")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for batch in args.batch:
        print(measure(batch, args.steps, args.block), flush=True)


if __name__ == "__main__":
    main()
