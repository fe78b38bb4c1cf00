"""Probe overhead per pass: plain vs full capture, forward and forward+backward (issue 10, goal 3).

    .venv/bin/python bench/probe_overhead.py             # ~1 min
    .venv/bin/python bench/probe_overhead.py --rounds 40 --only cifar

Every probed call builds, enters and closes its Probe (as bench/capture.py times it):
`with Probe(model): model(x)` and `model.zero_grad(set_to_none=True); with Probe(model):
model(x).sum().backward()`. One torch thread, eval mode, grad mode on. Contenders run
interleaved (round r starts at contender r mod 4), each sample a short burst of calls with the
garbage collector off, so a noisy neighbour hits all alike (`--sample-ms 0 --rounds 1500`: one
call per sample, plain and probe alternating call by call: the steadiest on a busy machine);
printed per contender: median and 25th percentile ms per call (wall) and the probe/plain ratios
of wall and of this thread's CPU time,
against the goal: ≤ 1.5× at batch 1 (convnetjs-cifar), ≤ 1.2× at batch 4 (the ResNet-style
stack of bench/capture.py).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture import build  # bench/ is not a package: its directory is on sys.path

from convscope.capture import Probe

CASES = {"cifar": ("convnetjs-cifar", 1, 1.5), "stack": ("resnet-style-stack", 4, 1.2)}


def contenders(model: nn.Module, x: Tensor) -> dict[str, Callable[[], object]]:
    def plain_fwd() -> object:
        return model(x)

    def probe_fwd() -> object:
        with Probe(model) as p:
            model(x)
        return p

    def plain_bwd() -> object:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
        return None

    def probe_bwd() -> object:
        model.zero_grad(set_to_none=True)
        with Probe(model) as p:
            model(x).sum().backward()
        return p

    return {"plain fwd": plain_fwd, "probe fwd": probe_fwd, "plain f+b": plain_bwd, "probe f+b": probe_bwd}


def sample(fn: Callable[[], object], number: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call over `number` calls; the caller turns the collector off."""
    c0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number, (time.thread_time() - c0) / number


def p25(v: list[float]) -> float:
    return sorted(v)[len(v) // 4]


def run(key: str, rounds: int, sample_s: float) -> None:
    net, batch, goal = CASES[key]
    model, shape = build(net)
    x = torch.randn(batch, *shape)
    fns = contenders(model, x)
    numbers = {}
    for name, fn in fns.items():
        for _ in range(3):
            fn()
        one, _ = sample(fn, 5)
        numbers[name] = max(1, round(sample_s / one))  # --sample-ms 0: one call per sample
    wall: dict[str, list[float]] = {n: [] for n in fns}
    cpu: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    gc.disable()  # off during the rounds (as timeit does); collected between them, untimed
    try:
        for r in range(rounds):
            if r % 20 == 0:
                gc.collect()
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                w, c = sample(fns[name], numbers[name])
                wall[name].append(w)
                cpu[name].append(c)
    finally:
        gc.enable()
    print(f"\n{net}, batch {batch}, {rounds} rounds (goal ≤ {goal}×)")
    print(f"  {'':10s} {'median ms':>10s} {'p25 ms':>8s} {'cpu med ms':>10s}")
    for name in names:
        print(
            f"  {name:10s} {statistics.median(wall[name]) * 1e3:10.3f} {p25(wall[name]) * 1e3:8.3f}"
            f" {statistics.median(cpu[name]) * 1e3:10.3f}"
        )
    for p in ("fwd", "f+b"):
        a, b = f"probe {p}", f"plain {p}"
        med = statistics.median(wall[a]) / statistics.median(wall[b])
        low = p25(wall[a]) / p25(wall[b])
        cpu_r = statistics.median(cpu[a]) / statistics.median(cpu[b])
        ok = "ok" if med <= goal else "OVER"
        print(f"  probe/plain {p}: wall median {med:.2f}×, p25 {low:.2f}×, cpu {cpu_r:.2f}×  [{ok}, goal {goal}×]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument(
        "--sample-ms", type=float, default=40.0,
        help="wall time of one sample; 0 = one call per sample (paired, steadier on a busy machine)",
    )  # fmt: skip
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for key in args.only or ["cifar", "stack"]:
        run(key, args.rounds, args.sample_ms / 1e3)


if __name__ == "__main__":
    main()
