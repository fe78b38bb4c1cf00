"""Where a watched step's time goes, phase by phase, against two unwatched copies of the same loop
(issue 10, goal 1: what the recorder costs the training that its own budget cannot see).

    .venv/bin/python bench/watch_phases.py        # batch 64, about 2 minutes

zoo:convnetjs-cifar, SGD with momentum, one torch thread, random data; three loops in one process
(unwatched, watched, a second unwatched copy), interleaved in blocks of 40 steps over 30 rounds.
Each step's forward, backward, optimizer step and `run.step()` are timed on this thread's CPU
clock. Printed: mean ms per phase over all steps and over plain steps (no probe), and the watched
loop's forward+backward by steps since its last probed step, against the unwatched mean.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import convscope as cs
from convscope.models.zoo import ZOO
from convscope.train.watch import Recorder

B, ROUNDS, BLOCK = 64, 30, 40
PHASES = ("fwd", "bwd", "opt", "rec")


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = ZOO["convnetjs-cifar"].factory()
    xs, ys = torch.randn(B * 32, 3, 32, 32), torch.randint(0, 10, (B * 32,))
    clock = time.thread_time
    with tempfile.TemporaryDirectory() as tmp:
        loops: dict[str, tuple[nn.Module, torch.optim.Optimizer, Recorder | None]] = {}
        for name in ("off", "on", "off2"):
            m = copy.deepcopy(base)
            run = cs.watch(m, Path(tmp) / name) if name == "on" else None
            loops[name] = (m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), run)
        times: dict[str, dict[str, list[float]]] = {k: {p: [] for p in PHASES} for k in loops}
        kinds: dict[str, list[str]] = {k: [] for k in loops}

        def step(name: str, i: int) -> None:
            m, opt, run = loops[name]
            k = i % 32
            kind = run._plan if run is not None else "plain"
            t0 = clock()
            loss = F.cross_entropy(m(xs[k * B : (k + 1) * B]), ys[k * B : (k + 1) * B])
            t1 = clock()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = clock()
            opt.step()
            t3 = clock()
            if run is not None:
                run.step(loss=loss)
            t4 = clock()
            for p, v in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[name][p].append(v)
            kinds[name].append(kind)

        for i in range(BLOCK):  # warm-up (the recorder's first steps)
            for name in loops:
                step(name, i)
        for name in loops:
            kinds[name].clear()
            for v in times[name].values():
                v.clear()
        names = list(loops)
        for r in range(ROUNDS):
            for name in names[r % 3 :] + names[: r % 3]:
                for i in range(BLOCK):
                    step(name, i)

        def mean(v: list[float]) -> float:
            return 1e3 * sum(v) / len(v) if v else float("nan")

        print(f"convnetjs-cifar B={B}: {ROUNDS} rounds of {BLOCK} steps per loop; ms of this thread's CPU per step")
        for name in loops:
            plain = [j for j, kd in enumerate(kinds[name]) if kd == "plain"]
            every = "  ".join(f"{p} {mean(times[name][p]):.3f}" for p in PHASES)
            only = "  ".join(f"{p} {mean([times[name][p][j] for j in plain]):.3f}" for p in PHASES)
            print(f"  {name:>4} all steps: {every}   | plain steps ({len(plain)}): {only}")
        off = [a + b for a, b in zip(times["off"]["fwd"], times["off"]["bwd"], strict=True)]
        groups: dict[str, list[float]] = {}
        since: int | None = None
        on = times["on"]
        for j, kd in enumerate(kinds["on"]):
            if kd != "plain":
                since = 0
                groups.setdefault(kd, []).append(on["fwd"][j] + on["bwd"][j])
            elif since is not None:
                since += 1
                groups.setdefault(f"{min(since, 8)}{'+' if since >= 8 else ''} after", []).append(on["fwd"][j] + on["bwd"][j])
        print(f"  watched forward+backward against unwatched {mean(off):.3f} ms, by steps since the last probed step:")
        for g in sorted(groups):
            print(f"    {g:>9}: {mean(groups[g]):.3f} ms ({mean(groups[g]) - mean(off):+.3f}, n={len(groups[g])})")
        run = loops["on"][2]
        assert run is not None
        t = run.budget.total
        print(f"  the recorder's measured share: {100 * t.cost_s / t.train_s:.2f}% (statistics on {t.stats_steps} of {t.steps} steps)")
        run.close()


if __name__ == "__main__":
    main()
