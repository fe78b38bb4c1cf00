"""Coasting A/B (issue 10, goal 1): the same training loop unwatched, watched, and watched with every
step planned (no coasting), in one process, interleaved in ~1 s samples (the start rotates).

    .venv/bin/python bench/coast_ab.py            # batch 64, 30 rounds: about 2 minutes
    .venv/bin/python bench/coast_ab.py --batch 32 --rounds 20

zoo:convnetjs-cifar, SGD with momentum, one torch thread, random data. Printed for each watched
loop: on/off throughput per CPU second (the median of the rounds' own ratios, and the ratio of the
lower quartiles), statistics steps, and the recorder's own measured share of the step time.
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
from torch import nn

import convscope as cs
from convscope.models.zoo import ZOO
from convscope.train.watch import Recorder


class Loop:
    def __init__(self, base: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch: int, mode: str, tmp: Path) -> None:
        self.model = copy.deepcopy(base)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.xs, self.ys, self.batch, self.i = data[0], data[1], batch, 0
        self.run: Recorder | None = None if mode == "off" else cs.watch(self.model, tmp / mode)
        if mode == "planned" and self.run is not None:
            self.run.budget.coast_ahead = lambda step, now, step_s: (0, False)  # type: ignore[method-assign]

    def step(self) -> None:
        k, b = self.i % 32, self.batch
        self.i += 1
        loss = F.cross_entropy(self.model(self.xs[k * b : (k + 1) * b]), self.ys[k * b : (k + 1) * b])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.run is not None:
            self.run.step(loss=loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = ZOO["convnetjs-cifar"].factory()
    data = torch.randn(args.batch * 32, 3, 32, 32), torch.randint(0, 10, (args.batch * 32,))
    with tempfile.TemporaryDirectory() as tmp:
        loops = {m: Loop(base, data, args.batch, m, Path(tmp)) for m in ("off", "coasting", "planned")}
        for loop in loops.values():
            for _ in range(30):
                loop.step()
        t = time.process_time()
        for _ in range(10):
            loops["off"].step()
        per_sample = max(1, round(1.0 / ((time.process_time() - t) / 10)))
        cpu: dict[str, list[float]] = {m: [] for m in loops}
        order = list(loops)
        for r in range(args.rounds):
            for m in order[r % 3 :] + order[: r % 3]:
                t = time.process_time()
                for _ in range(per_sample):
                    loops[m].step()
                cpu[m].append((time.process_time() - t) / per_sample)
        print(f"convnetjs-cifar B={args.batch}: {args.rounds} rounds of {per_sample} steps per loop; "
              f"unwatched {1e3 * statistics.median(cpu['off']):.2f} ms CPU a step")  # fmt: skip
        for m in ("coasting", "planned"):
            run = loops[m].run
            assert run is not None
            paired = statistics.median(a / b for a, b in zip(cpu["off"], cpu[m], strict=True))
            q25 = statistics.quantiles(cpu["off"], n=4)[0] / statistics.quantiles(cpu[m], n=4)[0]
            total = run.budget.total
            print(f"  {m:>9}: on/off {paired:.3f} (lower quartiles {q25:.3f}); statistics on "
                  f"{total.stats_steps} of {total.steps} steps; measured share {100 * total.cost_s / total.train_s:.2f}%")  # fmt: skip
            run.close()


if __name__ == "__main__":
    main()
