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
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _timing import Away, git_commit

from convscope.models.zoo import ZOO
from convscope.train.watch import Recorder

NET = "convnetjs-cifar"


def measure(batch: int, steps: int, block: int) -> dict[str, Any]:
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
        run = Recorder(models["on"], Path(tmp) / "run", **away.clocks())
        away.follow(run.writer)
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
    return {
        "net": NET, "batch": batch, "steps": steps, "block": block, "off_ms": off_ms, "on_ms": on_ms,
        "writer_ms": 1e3 * writer / steps, "on_off": off_ms / on_ms, "measured_share": cost / train,
        "kinds": {kind: {"steps": len(v), "over_off_ms": 1e3 * statistics.mean(v) - off_ms} for kind, v in sorted(on.items())},
    }  # fmt: skip


def describe(r: dict[str, Any]) -> str:
    lines = [
        f"{r['net']} B={r['batch']}, {r['steps']} steps a loop in blocks of {r['block']}: off {r['off_ms']:.2f} ms"
        f" a step, on {r['on_ms']:.2f} (its writer thread {r['writer_ms']:.3f}); true cost"
        f" {100 * (r['on_ms'] / r['off_ms'] - 1):+.2f}%, on/off {r['on_off']:.4f}; the recorder measured"
        f" {100 * r['measured_share']:.2f}% for itself"
    ]
    for kind, k in r["kinds"].items():
        lines.append(f"    {kind:>8}: {k['steps']:5d} steps, {k['over_off_ms']:+8.3f} ms over off")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--steps", type=int, default=960, help="timed steps of each loop")
    ap.add_argument("--block", type=int, default=8, help="steps of one loop before the other's")
    ap.add_argument("--quick", action="store_true", help="160 steps a loop: a smoke run")
    ap.add_argument("--out", type=Path, help="also write the results as JSON (bench/speed.py reads them)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = []
    t0 = time.perf_counter()
    for batch in args.batch:
        results.append(measure(batch, 160 if args.quick else args.steps, args.block))
        print(describe(results[-1]), flush=True)
    if args.out is not None:
        meta = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": git_commit(),
                "torch": torch.__version__, "threads": 1, "quick": args.quick,
                "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "gap": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
