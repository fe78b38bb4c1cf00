"""Benchmark: convscope.diagnose throughput vs a plain forward pass over the same batches, and its memory.

    .venv/bin/python bench/diagnose.py                # full run (~3-5 minutes on 2 busy cores)
    .venv/bin/python bench/diagnose.py --threads 1    # on a machine other processes keep busy
    .venv/bin/python bench/diagnose.py --quick        # smoke run

zoo:convnetjs-cifar (its shipped weights when present) on the built-in photo-crops test split
(2,000 crops, 3×32×32, normalised with the model's mean/std), batch 64, eval mode. Timed,
interleaved in the same run, one call = one pass over all the inputs:

    plain fwd            for x in batches: model(norm(x))              under torch.no_grad()
    diagnose, no grads   diagnose(model, (X, y), gradients=False)     dead/mostly-dead counts, maps, roughness
    diagnose, default    diagnose(model, (X, y))                      + gradient health on 4 of the 32 batches

diagnose runs its first batch under a Probe and the rest under forward hooks on the activation
modules; mean maps and shares of zeros come from 4 of the 32 batches, everything else from all.
Reported: seconds per pass, inputs per second, and throughput relative to the plain pass
(goal: diagnose without gradients ≥ 0.9× plain; the default adds 4 backward passes, stated as is).
Memory: the peak resident-set growth during one call (Linux: VmHWM after resetting it through
/proc/self/clear_refs), each measured in a fresh process after a one-batch warm-up, at two dataset
sizes, 1,000 and 10,000 photo-crops training inputs held in memory before the call: diagnose
streams, so its peak should not grow with the dataset.
Results also go to bench/results/diagnose.json. Timing method: bench/_timing.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _timing import Contender, Timing, compare, load_average
from torch import Tensor, nn

from convscope import diagnose
from convscope.data import photo_crops
from convscope.inspect import open_model

GOAL = 0.9  # diagnose (no gradients) throughput / plain forward throughput
BATCH = 64
RESULTS = Path(__file__).resolve().parent / "results" / "diagnose.json"
MEMORY_SIZES = (1_000, 10_000)


def _normaliser(mean: list[float] | None, std: list[float] | None) -> Callable[[Tensor], Tensor]:
    if mean is None or std is None:
        return lambda x: x
    m = torch.tensor(mean).view(1, -1, 1, 1)  # (1, C, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return lambda x: (x - m) / s


def plain_pass(model: nn.Module, X: Tensor, norm: Callable[[Tensor], Tensor], limit: int | None = None) -> None:
    n = X.shape[0] if limit is None else min(limit, X.shape[0])
    with torch.no_grad():
        for i in range(0, n, BATCH):
            model(norm(X[i : min(i + BATCH, n)]))


def contenders(model: nn.Module, X: Tensor, y: Tensor, norm: Callable[[Tensor], Tensor]) -> list[Contender]:
    return [
        Contender("plain fwd", lambda: plain_pass(model, X, norm)),
        Contender("diagnose, no grads",
                  lambda: diagnose(model, (X, y), batch_size=BATCH, gradients=False, transform=norm)),
        Contender("diagnose, default", lambda: diagnose(model, (X, y), batch_size=BATCH, transform=norm)),
    ]  # fmt: skip


# ---- memory ----------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_growth_mb(fn: Callable[[], object]) -> float | None:
    """Peak resident memory during fn() above the resident memory just before it (MB), or None
    where the peak can't be reset (not Linux)."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return (peak - before) / 1024


def memory_child(n: int, what: str) -> dict[str, Any]:
    """In a fresh process: hold n inputs, warm up on one batch, then the peak growth of one pass."""
    loaded = open_model("zoo:convnetjs-cifar")
    model, norm = loaded.model.eval(), _normaliser(loaded.mean, loaded.std)
    X, y = photo_crops("train", n, size=32, seed=1)  # (n, 3, 32, 32) held in memory
    if what == "plain":
        plain_pass(model, X[:BATCH], norm)  # warm-up: one batch
        grew = peak_growth_mb(lambda: plain_pass(model, X, norm))
    else:
        diagnose(model, (X[:BATCH], y[:BATCH]), transform=norm)
        grew = peak_growth_mb(lambda: diagnose(model, (X, y), transform=norm))
    return {"inputs": n, "what": what, "data_mb": X.element_size() * X.numel() / 2**20, "peak_mb": grew}


def memory_rows(*, quick: bool, threads: int) -> list[dict[str, Any]]:
    """Each (size, contender) in its own process, so no allocator cache carries over."""
    sizes = tuple(s // 10 for s in MEMORY_SIZES) if quick else MEMORY_SIZES
    rows = []
    for n in sizes:
        row: dict[str, Any] = {"inputs": n}
        for what in ("plain", "diagnose"):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(n), what, "--threads", str(threads)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            child = json.loads(out.stdout.strip().splitlines()[-1])
            row["data_mb"] = child["data_mb"]
            row[f"{what}_peak_mb"] = child["peak_mb"]
        rows.append(row)
    return rows


# ---- running and reporting --------------------------------------------------------------
def summarize(t: dict[str, Timing], inputs: int) -> dict[str, Any]:
    plain = t["plain fwd"].median
    rows = {}
    for name, timing in t.items():
        rows[name] = {
            "s_per_pass": timing.median,
            "inputs_per_s": inputs / timing.median,
            "throughput_vs_plain": plain / timing.median,
            "noise": timing.spread,
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="512 inputs, 3 rounds: a smoke run")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    ap.add_argument("--inputs", type=int, help="inputs per pass (default 2000; 512 with --quick)")
    ap.add_argument("--repeats", type=int, help="interleaved rounds (default 9; 3 with --quick)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    ap.add_argument("--memory-child", nargs=2, metavar=("N", "WHAT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(int(args.memory_child[0]), args.memory_child[1])))
        return 0

    loaded = open_model("zoo:convnetjs-cifar")
    model = loaded.model.eval()
    norm = _normaliser(loaded.mean, loaded.std)
    n = args.inputs or (512 if args.quick else 2000)
    X, y = photo_crops("test", n, size=32, seed=1)  # (n, 3, 32, 32), (n,)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "weights": "shipped" if loaded.metadata else "random init",
        "inputs": n,
        "batch": BATCH,
        "quick": args.quick,
        "load_before": load_average(),
        "goal_no_grads_vs_plain": GOAL,
    }
    load = meta["load_before"]
    if load is not None and load[0] >= 1.0 and meta["threads"] > 1:
        print(f"warning: load average {load[0]} before starting: other processes use the CPUs and "
              f"{meta['threads']} torch threads wait for each other; compare with --threads 1")  # fmt: skip
    print(f"timing 3 contenders over {n} inputs (batch {BATCH}), rounds: ", end="", flush=True)
    t0 = time.perf_counter()
    timings = compare(
        contenders(model, X, y, norm),
        repeats=args.repeats or (3 if args.quick else 9),
        min_repeats=3,
        warmup=1,
        min_sample_s=0.0,
        budget_s=None if args.quick else 240,
        on_round=lambda r: print(r, end=" ", flush=True),
    )
    print(f"({time.perf_counter() - t0:.0f} s)")
    rows = summarize(timings, n)
    mem = memory_rows(quick=args.quick, threads=torch.get_num_threads())
    meta["load_after"] = load_average()
    meta["wall_s"] = round(time.perf_counter() - t0, 1)

    print()
    print(f"convscope diagnose benchmark — torch {meta['torch']}, {meta['threads']} threads on "
          f"{meta['cpus']} CPUs, zoo:convnetjs-cifar ({meta['weights']}), {n} photo-crops, median of "
          f"{len(timings['plain fwd'].samples)} interleaved rounds")  # fmt: skip
    head = f"{'':<22}{'s / pass':>10}{'inputs/s':>10}{'vs plain':>10}{'noise':>8}"
    print(head)
    print("─" * len(head))
    for name, r in rows.items():
        print(f"{name:<22}{r['s_per_pass']:>10.3f}{r['inputs_per_s']:>10.0f}{r['throughput_vs_plain']:>9.2f}×"
              f"{r['noise']:>7.0%}")  # fmt: skip
    ratio = rows["diagnose, no grads"]["throughput_vs_plain"]
    verdict = "met" if ratio >= GOAL else "MISSED"
    print(f"goal: diagnose without gradients ≥ {GOAL}× plain forward throughput — {verdict} ({ratio:.2f}×)")
    print(f"the default also runs 4 backward passes for gradient health: "
          f"{rows['diagnose, default']['throughput_vs_plain']:.2f}× plain")
    print()
    print("peak memory growth during one pass (MB above the resident memory before it, each in a fresh process):")
    for r in mem:
        p, d = r["plain_peak_mb"], r["diagnose_peak_mb"]
        fmt = (lambda v: "n/a" if v is None else f"{v:6.1f}")  # noqa: E731
        print(f"  {r['inputs']:>6} inputs held ({r['data_mb']:6.1f} MB of data): plain {fmt(p)}   diagnose {fmt(d)}")
    ds = [r["diagnose_peak_mb"] for r in mem]
    if None not in ds:
        print(f"diagnose peak at {mem[-1]['inputs']:,} vs {mem[0]['inputs']:,} inputs: "
              f"{ds[-1] - ds[0]:+.1f} MB (data grew {mem[-1]['data_mb'] - mem[0]['data_mb']:.0f} MB)")  # fmt: skip
    print(f"load average before {meta['load_before']}, after {meta['load_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "timings": rows, "memory": mem}, indent=1) + "\n")
    print(f"wrote {args.out} ({meta['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
