"""What `watch()` costs each rank of a DDP job (torchrun, 2 processes, gloo, CPU).

    .venv/bin/python bench/ddp.py            # about 3 minutes on a quiet 2-core machine
    .venv/bin/python bench/ddp.py --quick    # a smoke run

The user's loop: DistributedDataParallel(zoo:convnetjs-cifar), SGD, batches of 32 per rank of
builtin:photo-crops (each rank its own half). Every rank alternates samples of N training steps
without watch ("plain") and with `run = cs.watch(model, dir)` + `run.step(loss=loss)` ("watch"),
in rotating order (plain, watch, then watch, plain, ...), both ranks on the same schedule (a
barrier before each sample; the recorder is opened, resumed, untimed before a watch sample and
closed after it). Per rank and sample: wall and process-CPU seconds per step, and the time
spent inside `run.step()`. Reported per rank: the paired ratio watch/plain (median over rounds)
of CPU and of wall time per step, and `run.step()`'s share of the watched step. Goal: rank 1's
CPU ratio <= 1.03 (the ranks that do not write the run cost at most 3 % of their step). Wall
time of rank 1 also waits for rank 0 in DDP's gradient all_reduce, so it follows rank 0's
(which writes the store): that is reported, not the goal. Results: bench/results/ddp.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NET = "convnetjs-cifar"
BATCH = 32  # per rank
GOAL = 1.03
RESULTS = Path(__file__).resolve().parent / "results" / "ddp.json"


def worker(out: Path, rounds: int, steps: int) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    import convscope as cs
    from convscope.data import photo_crops
    from convscope.models.zoo import ZOO

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    x, y = photo_crops("train", 16 * BATCH * size, size=ZOO[NET].input_shape[1], seed=0)
    x, y = x[rank::size], y[rank::size]
    torch.manual_seed(0)
    model = DistributedDataParallel(ZOO[NET].factory().train())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    at = [0]
    inside = [0.0, 0.0]  # wall, cpu seconds inside run.step()

    def train() -> torch.Tensor:
        i = at[0] % (len(x) // BATCH)
        at[0] += 1
        loss = F.cross_entropy(model(x[i * BATCH : (i + 1) * BATCH]), y[i * BATCH : (i + 1) * BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    run_dir = out / "run"
    samples: dict[str, list[dict[str, float]]] = {"plain": [], "watch": []}
    for r in range(rounds + 1):  # round 0 warms up and is dropped
        for kind in ("plain", "watch") if r % 2 == 0 else ("watch", "plain"):
            run = None
            if kind == "watch":
                run = cs.watch(model, run_dir, resume=(run_dir / "run.sqlite").exists())
                run.step(loss=train())  # untimed: the layer table, a snapshot
            inside[0] = inside[1] = 0.0
            dist.barrier()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                loss = train()
                if run is not None:
                    s0, t0 = time.perf_counter(), time.process_time()
                    run.step(loss=loss)
                    inside[0] += time.perf_counter() - s0
                    inside[1] += time.process_time() - t0
            w1, c1 = time.perf_counter(), time.process_time()
            if run is not None:
                run.close()
            if r:
                samples[kind].append({
                    "wall": (w1 - w0) / steps, "cpu": (c1 - c0) / steps,
                    "step_wall": inside[0] / steps, "step_cpu": inside[1] / steps,
                })  # fmt: skip
    (out / f"rank-{rank}.json").write_text(json.dumps(samples))
    dist.barrier()
    dist.destroy_process_group()


def summary(samples: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    plain, watched = samples["plain"], samples["watch"]

    def ratio(key: str) -> float:
        return statistics.median(w[key] / p[key] for p, w in zip(plain, watched, strict=True))

    return {
        "plain_ms_wall": 1e3 * statistics.median(p["wall"] for p in plain),
        "plain_ms_cpu": 1e3 * statistics.median(p["cpu"] for p in plain),
        "watch_ms_wall": 1e3 * statistics.median(w["wall"] for w in watched),
        "watch_ms_cpu": 1e3 * statistics.median(w["cpu"] for w in watched),
        "ratio_cpu": ratio("cpu"),
        "ratio_wall": ratio("wall"),
        "run_step_share_wall": statistics.median(w["step_wall"] / w["wall"] for w in watched),
        "run_step_share_cpu": statistics.median(w["step_cpu"] / w["cpu"] for w in watched),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 10 steps (a smoke run)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=None, help="paired samples (default 6, quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="steps per sample (default 40, quick 10)")
    args = ap.parse_args()
    rounds = args.rounds or (2 if args.quick else 6)
    steps = args.steps or (10 if args.quick else 40)
    if args.worker is not None:
        worker(args.worker, rounds, steps)
        return
    out = Path(tempfile.mkdtemp(prefix="convscope-bench-ddp-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    load0 = os.getloadavg()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__,
           "--worker", str(out), "--rounds", str(rounds), "--steps", str(steps)]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    took = time.perf_counter() - t0
    try:
        ranks = {r: summary(json.loads((out / f"rank-{r}.json").read_text())) for r in (0, 1)}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"watch() under DDP: zoo:{NET}, batch {BATCH} per rank, 2 ranks (gloo, CPU), {rounds} rounds x {steps} steps")
    print(f"load average before {load0[0]:.1f}, after {load1[0]:.1f}; {took:.0f} s")
    for r, s in ranks.items():
        role = "writes the run" if r == 0 else "writes nothing"
        print(
            f"rank {r} ({role}): plain {s['plain_ms_cpu']:.1f} ms CPU / {s['plain_ms_wall']:.1f} ms wall per step; "
            f"watch/plain CPU {s['ratio_cpu']:.3f}x, wall {s['ratio_wall']:.3f}x; "
            f"run.step() {100 * s['run_step_share_cpu']:.1f}% of the step's CPU, {100 * s['run_step_share_wall']:.1f}% of its wall"
        )
    ok = ranks[1]["ratio_cpu"] <= GOAL
    print(f"goal rank 1 CPU ratio <= {GOAL}: {'met' if ok else 'MISSED'}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rounds": rounds, "steps": steps, "load": [load0[0], load1[0]],
                                   "ranks": ranks, "goal_rank1_cpu": GOAL, "met": ok}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
