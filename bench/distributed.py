"""Scale-out report: top-k patches over N images with 1 and 2 torchrun processes (gloo, CPU).

    make bench                                   # ... then .venv/bin/python bench/distributed.py
    .venv/bin/python bench/distributed.py        # 20,000 images (a few minutes on 2 busy cores)
    .venv/bin/python bench/distributed.py --n 2000 --rounds 1   # a smoke run

Issue 14, "Speed" (a report, not a goal, on this 2-core machine). zoo:zfnet-small (random init, eval),
layers conv1..conv5, k = 9, batch 64, one torch thread per process, over N images made on the fly from
their index (seeded noise, so 20,000 images at 112² are never held: they would be 3 GB). Each round runs
`torchrun --standalone --nproc-per-node P bench/distributed.py` for P = 1 then 2 (the order
alternates between rounds); the worker times, after a barrier, its top-k pass including the merge
(`convscope.distributed.top_patches`), and rank 0 prints the seconds and a digest of the hits. The two
digests must be equal (the same hits, indices and positions) or the bench stops. Printed: seconds per
pass for 1 and 2 processes, the speed-up (expect ≤ 2× on 2 cores), the time per 1,000 images per
process, and from it the paper plan of docs/scale.md (ImageNet's 1,281,167 images over 8 ranks).
Results go to bench/results/distributed.json with the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

HERE = Path(__file__).resolve().parent
IMAGENET = 1_281_167
LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


class Noise(Dataset[tuple[torch.Tensor, int]]):
    """N images of seeded noise, each made from its index (a Dataset that never holds them all)."""

    def __init__(self, n: int, shape: tuple[int, int, int]) -> None:
        self.n, self.shape = n, shape

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(i)
        return torch.rand(self.shape, generator=g), 0


def worker(n: int, out: str) -> None:
    import torch.distributed as dist

    from convscope.analysis.units import TopPatches
    from convscope.distributed import init_from_env, top_patches
    from convscope.models.zoo import get_entry

    torch.set_num_threads(1)
    init_from_env()
    torch.manual_seed(0)
    model = get_entry("zfnet-small").factory().eval()
    data = Noise(n, (3, 112, 112))
    if dist.is_initialized():
        dist.barrier()
    t0 = time.perf_counter()
    result = top_patches(TopPatches(model, layers=LAYERS, k=9), data, batch_size=64)
    seconds = time.perf_counter() - t0
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        h = hashlib.sha256()
        for name in LAYERS:
            h.update(result[name].indices.numpy().tobytes())
            h.update(result[name].positions.numpy().tobytes())
        Path(out).write_text(json.dumps({"seconds": seconds, "digest": h.hexdigest(), "inputs": result.inputs}))
    if dist.is_initialized():
        dist.destroy_process_group()


def run(nproc: int, n: int) -> dict[str, float | str]:
    out = HERE / "results" / f".distributed-{nproc}.json"
    # the worker's arguments travel in the environment (torchrun would read --n as its own option)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_WORKER_N": str(n), "BENCH_WORKER_OUT": str(out)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(Path(__file__).resolve())]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"torchrun with {nproc} processes failed:\n{proc.stderr[-3000:]}")
    got: dict[str, float | str] = json.loads(out.read_text())
    out.unlink()
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    if "BENCH_WORKER_N" in os.environ:
        worker(int(os.environ["BENCH_WORKER_N"]), os.environ["BENCH_WORKER_OUT"])
        return
    args = ap.parse_args()
    (HERE / "results").mkdir(exist_ok=True)
    load0 = os.getloadavg()
    times: dict[int, list[float]] = {1: [], 2: []}
    digests: set[str] = set()
    for r in range(args.rounds):
        for p in ((1, 2) if r % 2 == 0 else (2, 1)):
            got = run(p, args.n)
            times[p].append(float(got["seconds"]))
            digests.add(str(got["digest"]))
            print(f"round {r + 1}: {p} process(es) {float(got['seconds']):.1f} s", flush=True)
    if len(digests) != 1:
        sys.exit("the 1- and 2-process hits differ: the merge is not exact")
    one, two = statistics.median(times[1]), statistics.median(times[2])
    per_k = {p: statistics.median(times[p]) / (args.n / p) * 1000 for p in (1, 2)}
    # the plan: 8 ranks, each its shard of ImageNet at the 2-process per-rank rate
    imagenet_h = IMAGENET / 8 * per_k[2] / 1000 / 3600
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "n": args.n, "rounds": args.rounds,
        "seconds_1": times[1], "seconds_2": times[2], "speedup": one / two,
        "seconds_per_1k_per_process": per_k, "imagenet_8_ranks_hours": imagenet_h,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
    }  # fmt: skip
    (HERE / "results" / "distributed.json").write_text(json.dumps(result, indent=2))
    print(f"top-k over {args.n:,} images, zfnet-small 112², batch 64, 1 thread per process (median of {args.rounds}):")
    print(f"  1 process  {one:7.1f} s   {per_k[1]:.2f} s per 1k images")
    print(f"  2 processes {two:6.1f} s   {per_k[2]:.2f} s per 1k images per process")
    print(f"  speed-up 2 vs 1: {one / two:.2f}× (≤ 2× expected on 2 cores; load {load0[0]:.1f} → {os.getloadavg()[0]:.1f})")
    print(f"  hits identical in every run: yes ({len(times[1]) + len(times[2])} runs)")
    print(f"  ImageNet (1,281,167 images) on 8 ranks at this per-rank rate: {imagenet_h:.2f} h (DeepVis: 40 h, CaffeNet 227², 1 GPU)")


if __name__ == "__main__":
    main()
