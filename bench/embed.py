"""Embedding benchmark: seconds for the t-SNE of 5,000 and 20,000 layer codes (features + t-SNE), and their memory.

    make bench                                   # = ... then .venv/bin/python bench/embed.py
    .venv/bin/python bench/embed.py              # the full run (about 2-4 minutes on 2 busy cores)
    .venv/bin/python bench/embed.py --quick      # 1,000 and 2,000 codes: a smoke run
    .venv/bin/python bench/embed.py --threads 0  # torch's own thread count (default here: 1)

Issue 13, "Speed": `Embedding(model, layer).run(data, n=N, seed=0)` on the trained zoo:convnetjs-cifar
(shipped weights, its mean/std as the batch transform), layer `flatten` (the 320 numbers before the
classifier, what `convscope embed` maps by default), batch 64, perplexity 30, one openTSNE thread.
Data: the built-in photo crops of the held-out val cells. `open_dataset("builtin:photo-crops:val")`
holds 2,000 crops, so the bench draws N crops straight from the same val cells with
`convscope.data.builtin.photo_crops("val", N)` (same generator, more windows; made before timing,
not counted) and hands Embedding the (X, y) tensors, n = N (all of them: no sampling).

Reported per N, one run each (t-SNE at 20,000 takes a minute; its seed fixes the work, so repeats
would differ by machine noise only): seconds for the codes (the streaming forward pass), PCA to 50
and t-SNE (openTSNE picks Barnes-Hut below 10,000 points, FFT above), their total, the grid snap
(40×40 by linear assignment, outside the total), the codes' memory (float16: N × 320 × 2 bytes), the
process's peak resident-set growth during the run (Linux VmHWM after a reset, minus VmRSS before),
and the 10-nearest-neighbour label agreement of the map (chance 0.1) as a sanity check of the result.
The load average before and after is recorded. Results go to bench/results/embed.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path
from typing import Any

import openTSNE
import torch
from _timing import git_commit, load_average

from convscope.analysis.embedding import Embedding
from convscope.data.builtin import photo_crops
from convscope.embed import neighbour_agreement
from convscope.inspect import open_model

SIZES = (5_000, 20_000)  # (1_000, 2_000) with --quick
MODEL = "zoo:convnetjs-cifar"
LAYER = "flatten"
SIDE = 40
RESULTS = Path(__file__).resolve().parent / "results" / "embed.json"


def _status(key: str) -> int | None:
    """VmRSS / VmHWM of this process in bytes (Linux), None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def run_size(n: int) -> dict[str, Any]:
    loaded = open_model(MODEL)
    mean = torch.tensor(loaded.mean).view(1, -1, 1, 1)  # (1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, -1, 1, 1)
    t0 = time.perf_counter()
    X, y = photo_crops("val", n, size=32)  # (n, 3, 32, 32), (n,)
    made = time.perf_counter() - t0
    rss0 = _status("VmRSS")
    peak_ok = _reset_peak()
    t0 = time.perf_counter()
    emb = Embedding(loaded.model, layer=LAYER).run((X, y), n=n, seed=0, batch_size=64, transform=lambda x: (x - mean) / std)
    total = time.perf_counter() - t0
    hwm = _status("VmHWM")
    t0 = time.perf_counter()
    emb.grid(SIDE)
    grid_s = time.perf_counter() - t0
    agree, chance = neighbour_agreement(emb.xy, emb.labels)
    return {
        "n": n,
        "dim": int(emb.codes.shape[1]),
        "seconds": {k: round(v, 3) for k, v in emb.seconds.items()},
        "total_s": round(total, 3),
        "grid_s": round(grid_s, 3),
        "crops_made_s": round(made, 3),
        "codes_bytes": emb.codes_bytes,
        "peak_rss_growth_bytes": (hwm - rss0) if peak_ok and hwm is not None and rss0 is not None else None,
        "neighbour_agreement": round(agree, 4) if agree is not None else None,
        "chance": round(chance, 4) if chance is not None else None,
        "method": emb.method,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 and 2,000 codes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openTSNE": openTSNE.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": MODEL,
        "layer": LAYER,
        "data": "photo_crops('val', N) (the val cells of the built-in photo crops)",
        "load_before": load_average(),
    }
    sizes = (1_000, 2_000) if args.quick else SIZES
    results = [run_size(n) for n in sizes]
    meta["load_after"] = load_average()
    print(f"t-SNE of {MODEL} {LAYER} codes (one openTSNE thread, torch threads {meta['torch_threads']}, "
          f"load {meta['load_before']} → {meta['load_after']})")  # fmt: skip
    print(f"{'n':>7} {'codes s':>8} {'pca s':>6} {'t-SNE s':>8} {'total s':>8} {'grid s':>7} {'codes MiB':>10} {'peak RSS +MiB':>14} {'10-NN agree':>12}")
    for r in results:
        peak = r["peak_rss_growth_bytes"]
        print(
            f"{r['n']:>7,} {r['seconds']['codes']:>8.2f} {r['seconds']['pca']:>6.2f} {r['seconds']['tsne']:>8.2f}"
            f" {r['total_s']:>8.2f} {r['grid_s']:>7.2f} {r['codes_bytes'] / 2**20:>10.2f}"
            f" {'-' if peak is None else f'{peak / 2**20:.0f}':>14} {r['neighbour_agreement']:>12}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
