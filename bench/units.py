"""Top-k patches benchmark: TopPatches' streaming pass next to a plain forward pass, its memory, ImageNet time.

    make bench                                   # = ... then .venv/bin/python bench/units.py
    .venv/bin/python bench/units.py              # the full run (about 10-15 minutes on 2 busy cores)
    .venv/bin/python bench/units.py --quick      # 256 inputs, 3 rounds, memory at 100/1k/5k: a smoke run
    .venv/bin/python bench/units.py --only zfnet
    .venv/bin/python bench/units.py --threads 0  # torch's own thread count (default here: 1)
    .venv/bin/python bench/units.py --profile    # also cProfile one top-k pass per net (where the time goes)

Issue 12, "Speed". Two nets, random init, eval mode, batch 64, k = 9:

    zoo:zfnet-small       3×112×112   layers conv1 conv2 conv3 conv4 conv5   (the issue says 64² inputs,
                                      but zfnet-small's fc6 is sized for 112²: it runs at 112²)
    zoo:resnet18-shaped   3×64×64     layers conv1 layer1 layer2 layer3 layer4  (the stem's activation
                                      map, then each stage's output = its last block's output)

over the same 2,048 generated images (uniform noise, held in memory as one tensor so both contenders
see the model's cost and nothing else). Timed interleaved (plain, top-k, then top-k, plain, ...:
bench/_timing.py), one call = one pass over all the images:

    plain     with torch.no_grad(): for each batch of 64: model(X[i:i+64])
    top-k     TopPatches(model, layers=L, k=9).run(X, batch_size=64)     convscope.analysis.units

Before timing, top-k is checked once against a brute-force oracle on 256 images (4 batches, so both
of TopPatches' read paths run: the Probe on the first two batches, plain hooks after): every map's
maximum per image kept in memory (forward hooks written here, first position of the maximum found
by `==`), then per map the k largest, ties by lower index; values, indices and positions must be
exactly equal or the bench stops. Reported: seconds per pass, images per second, throughput top-k /
plain by wall time and by this process's CPU time (steadier on a shared machine), the median of the
per-round CPU ratios, and the noise. Goal: ≥ 0.9× plain on both nets.

Memory: zoo:zfnet-small at 112² over a Dataset that generates each image on the fly from its index
(so 50,000 images are never held: they would be 7.5 GB), read by a DataLoader at batch 64. Each (size,
contender) runs in a fresh process, after a one-batch warm-up; measured: the peak resident-set growth
during the pass (Linux: VmHWM after resetting it through /proc/self/clear_refs, minus VmRSS just
before) — the whole process (torch's CPU allocations are not seen by tracemalloc). It must be flat in
the dataset size. The pass's wall time there also gives a streamed rate (image generation included).

ImageNet: 1,281,167 training images ÷ the top-k rate on zfnet-small measured above (112² inputs, one
torch thread, image decoding and resizing not included), printed beside DeepVis's 40 h (CaffeNet at
227² over ImageNet, its README: a different net and size, so the comparison is rough).
Torch threads: 1 by default (other processes keep the 2 cores busy). The load average before and after
is recorded. Results go to bench/results/units.json. Timing method: bench/_timing.py.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _timing import Contender, Timing, compare, git_commit, load_average
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from convscope.analysis.units.top_patches import TopPatches, TopPatchesResult
from convscope.models import resolve_model

GOAL = 0.9  # top-k throughput / plain forward throughput, on both nets
BATCH = 64
K = 9
INPUTS = 2_048  # images per timed pass (256 with --quick)
ORACLE_INPUTS = 256  # images of the brute-force check (4 batches)
MEMORY_SIZES = (1_000, 10_000, 50_000)  # (100, 1_000, 5_000) with --quick
MEMORY_NET = "zfnet-small"
IMAGENET = 1_281_167  # ILSVRC-2012 training images
DEEPVIS_HOURS = 40.0  # DeepVis toolbox: find_max_acts over ImageNet, offline
RESULTS = Path(__file__).resolve().parent / "results" / "units.json"


@dataclass(frozen=True)
class Case:
    key: str  # --only name
    net: str  # zoo name
    size: int  # H = W of the input images
    layers: tuple[str, ...]  # what TopPatches ranks
    # layer → (module whose output is that layer's map, in the oracle's own forward hooks)
    oracle_modules: dict[str, str]
    budget_s: float  # seconds of timed rounds (full run); min repeats still apply


CASES = (
    Case("zfnet", "zfnet-small", 112, ("conv1", "conv2", "conv3", "conv4", "conv5"),
         {f"conv{i}": f"relu{i}" for i in range(1, 6)}, budget_s=150),
    Case("resnet", "resnet18-shaped", 64, ("conv1", "layer1", "layer2", "layer3", "layer4"),
         {"conv1": "relu", **{f"layer{i}": f"layer{i}" for i in range(1, 5)}}, budget_s=150),
)  # fmt: skip


class GeneratedImages(Dataset[Tensor]):
    """n images of `shape`, image i generated on the fly from (seed, i): the same every time, never
    all in memory."""

    def __init__(self, n: int, shape: tuple[int, int, int], seed: int = 0) -> None:
        self.n, self.shape, self.seed = n, shape, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Tensor:
        if not 0 <= i < self.n:
            raise IndexError(f"image {i} of {self.n}")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return torch.rand(self.shape, generator=g)  # (C, H, W) in [0, 1)


# ---- the contenders ---------------------------------------------------------------------
def plain_pass(model: nn.Module, data: Tensor | Dataset[Tensor]) -> None:
    """A forward-only pass in batches of 64: what every top-k pass adds to."""
    batches = (data[i : i + BATCH] for i in range(0, len(data), BATCH)) if isinstance(data, Tensor) \
        else DataLoader(data, batch_size=BATCH, shuffle=False)  # fmt: skip
    with torch.no_grad():
        for x in batches:  # (B, C, H, W)
            model(x)


def topk_pass(
    model: nn.Module, data: Tensor | Dataset[Tensor], layers: tuple[str, ...]
) -> TopPatchesResult:
    return TopPatches(model, layers=list(layers), k=K).run(data, batch_size=BATCH)


# ---- equal to a brute-force oracle (checked once, untimed) ------------------------------
def oracle(model: nn.Module, case: Case, X: Tensor) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """{layer: (values (C, k) float64, indices (C, k), positions (C, k, 2))}: every image's map
    maxima kept, then sorted by (-value, index)."""
    modules = dict(model.named_modules())
    maxima: dict[str, list[Tensor]] = {name: [] for name in case.layers}
    places: dict[str, list[Tensor]] = {name: [] for name in case.layers}
    width: dict[str, int] = {}
    done: set[str] = set()  # layers seen in this forward (the first call of each module counts)

    def hook_for(layer: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(_m: nn.Module, _args: Any, out: Tensor) -> None:
            if layer in done:
                return
            done.add(layer)
            flat = out.detach().flatten(2)  # (B, C, H*W)
            top = flat.amax(dim=2)  # (B, C)
            first = (flat == top[..., None]).to(torch.int8).argmax(dim=2)  # (B, C): first maximum
            maxima[layer].append(top.double())
            places[layer].append(first)
            width[layer] = int(out.shape[3])

        return hook

    handles = [
        modules[m].register_forward_hook(hook_for(layer))
        for layer, m in case.oracle_modules.items()
    ]
    try:
        with torch.no_grad():
            for i in range(0, X.shape[0], BATCH):
                done.clear()
                model(X[i : i + BATCH])
    finally:
        for h in handles:
            h.remove()
    out = {}
    for layer in case.layers:
        v = torch.cat(maxima[layer]).T  # (C, N)
        p = torch.cat(places[layer]).T  # (C, N)
        n = v.shape[1]
        rows = [sorted(range(n), key=lambda i, r=r: (-r[i], i))[:K] for r in v.tolist()]  # type: ignore[misc]
        idx = torch.tensor(rows, dtype=torch.int64)  # (C, k)
        pos = p.gather(1, idx)
        out[layer] = (
            v.gather(1, idx),
            idx,
            torch.stack([pos // width[layer], pos % width[layer]], -1),
        )
    return out


def check_exact(model: nn.Module, case: Case, X: Tensor) -> dict[str, Any]:
    got = topk_pass(model, X, case.layers)
    want = oracle(model, case, X)
    for layer in case.layers:
        h = got[layer]
        for what, a, b in zip(("values", "indices", "positions"), (h.values, h.indices, h.positions),
                              want[layer], strict=True):  # fmt: skip
            if a.shape != b.shape or not torch.equal(a, b):
                bad = "shape" if a.shape != b.shape else f"{int((a != b).sum())} entries"
                raise SystemExit(
                    f"top-k differs from the brute-force oracle on {case.net} {layer} {what} ({bad}):"
                    " not timing a wrong answer"
                )
    maps = {layer: len(got[layer]) for layer in case.layers}
    return {"inputs": int(X.shape[0]), "exact": True, "feature_maps": maps}


# ---- timing -----------------------------------------------------------------------------
def run_case(case: Case, *, quick: bool, inputs: int, profile: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    model, _ = resolve_model(f"zoo:{case.net}")
    model.eval()
    X = torch.rand(inputs, 3, case.size, case.size)  # (N, 3, H, W) held in memory
    print(f"  {case.net} {case.size}²: check vs oracle ... ", end="", flush=True)
    check = check_exact(model, case, X[:ORACLE_INPUTS])
    print("exact; rounds ", end="", flush=True)
    t0 = time.perf_counter()
    timings = compare(
        [Contender("plain", lambda: plain_pass(model, X)),
         Contender("top-k", lambda: topk_pass(model, X, case.layers))],
        repeats=3 if quick else 15,
        min_repeats=3 if quick else 5,
        warmup=1,
        min_sample_s=0.0,
        budget_s=None if quick else case.budget_s,
        on_round=lambda r: print(r, end=" ", flush=True),
    )  # fmt: skip
    print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    row = {"net": case.net, "input": [3, case.size, case.size], "layers": list(case.layers),
           "inputs": inputs, "vs_oracle": check} | summarize(timings, inputs)  # fmt: skip
    if profile:
        row["profile"] = profile_topk(model, X, case)
    return row


def summarize(t: dict[str, Timing], inputs: int) -> dict[str, Any]:
    p, k = t["plain"], t["top-k"]
    paired = statistics.median(b / a for a, b in zip(k.cpu_samples, p.cpu_samples, strict=True))
    return {
        "s_per_pass": {"plain": p.median, "top-k": k.median},
        "cpu_s_per_pass": {"plain": p.cpu_median, "top-k": k.cpu_median},
        "images_per_s": {"plain": inputs / p.median, "top-k": inputs / k.median},
        "throughput top-k/plain": p.median / k.median,
        "cpu throughput top-k/plain": p.cpu_median / k.cpu_median,
        "paired cpu throughput top-k/plain": paired,  # median over rounds of plain CPU / top-k CPU
        "noise": max(p.spread, k.spread),
        "meets_goal": p.median / k.median >= GOAL,
        "rounds": len(p.samples),
        "timings": {name: timing.as_dict() for name, timing in t.items()},
    }


def profile_topk(model: nn.Module, X: Tensor, case: Case) -> str:
    """cProfile of one top-k pass: the 18 functions with the most own time."""
    prof = cProfile.Profile()
    prof.enable()
    topk_pass(model, X, case.layers)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
    return buf.getvalue()


# ---- memory -----------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_growth_mb(fn: Callable[[], object]) -> tuple[float | None, float]:
    """(peak resident memory during fn() above the resident memory just before it in MB, or None
    where the peak can't be reset (not Linux); fn's wall seconds)."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        fn_s = _timed(fn)
        return None, fn_s
    before = _status_kb("VmRSS")
    fn_s = _timed(fn)
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None, fn_s
    return (peak - before) / 1024, fn_s


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def memory_child(n: int, what: str) -> dict[str, Any]:
    """In a fresh process: n generated images streamed; warm up on one batch, then one pass."""
    case = next(c for c in CASES if c.net == MEMORY_NET)
    torch.manual_seed(0)
    model, _ = resolve_model(f"zoo:{case.net}")
    model.eval()
    shape = (3, case.size, case.size)
    data = GeneratedImages(n, shape, seed=1)
    warm = GeneratedImages(BATCH, shape, seed=2)
    if what == "plain":
        plain_pass(model, warm)
        grew, s = peak_growth_mb(lambda: plain_pass(model, data))
    else:
        topk_pass(model, warm, case.layers)
        grew, s = peak_growth_mb(lambda: topk_pass(model, data, case.layers))
    held_mb = n * 3 * case.size**2 * 4 / 2**20  # what holding the images as float32 would take
    return {
        "inputs": n,
        "what": what,
        "peak_mb": grew,
        "s": s,
        "images_per_s": n / s,
        "if_held_mb": held_mb,
    }


def memory_rows(sizes: tuple[int, ...], threads: int) -> list[dict[str, Any]]:
    """Each (size, contender) in its own process, so no allocator cache carries over."""
    rows = []
    for n in sizes:
        row: dict[str, Any] = {"inputs": n}
        for what in ("plain", "top-k"):
            print(f"  {n:,} images, {what} ... ", end="", flush=True)
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(n), what, "--threads", str(threads)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            child = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{child['s']:.0f} s", flush=True)
            row["if_held_mb"] = child["if_held_mb"]
            row[what] = {
                "peak_mb": child["peak_mb"],
                "s": child["s"],
                "images_per_s": child["images_per_s"],
            }
        rows.append(row)
    return rows


def uncommitted(path: str = "src/convscope/analysis/units") -> list[str] | None:
    """Files under `path` that differ from the recorded commit (the bench ran on these)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", path],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return [line[3:] for line in out.stdout.splitlines()]


# ---- reporting --------------------------------------------------------------------------
def _hours(rate: float) -> float:
    return IMAGENET / rate / 3600


def imagenet_estimate(
    results: list[dict[str, Any]], mem: list[dict[str, Any]]
) -> dict[str, Any] | None:
    zf = next((r for r in results if r["net"] == MEMORY_NET), None)
    out: dict[str, Any] = {"images": IMAGENET, "deepvis_hours": DEEPVIS_HOURS, "net": MEMORY_NET}
    if zf is not None:
        rate = zf["images_per_s"]["top-k"]
        cpu_rate = zf["inputs"] / zf["cpu_s_per_pass"]["top-k"]
        out |= {
            "rate_wall": rate,
            "hours_wall": _hours(rate),
            "rate_cpu": cpu_rate,
            "hours_cpu": _hours(cpu_rate),
        }
    if mem:
        big = mem[-1]
        out |= {"streamed_inputs": big["inputs"], "rate_streamed": big["top-k"]["images_per_s"],
                "hours_streamed": _hours(big["top-k"]["images_per_s"])}  # fmt: skip
    return out if len(out) > 3 else None


def print_report(results: list[dict[str, Any]], mem: list[dict[str, Any]], est: dict[str, Any] | None,
                 meta: dict[str, Any]) -> None:  # fmt: skip
    print()
    print(f"convscope top-k patches benchmark — torch {meta['torch']}, {meta['threads']} torch thread(s) on"
          f" {meta['cpus']} CPUs, random init, eval mode, batch {BATCH}, k = {K}; one pass = all images;"
          " median of interleaved rounds; throughput top-k/plain by wall time [by CPU time]")  # fmt: skip
    head = (f"{'net':<16}{'input':>9}{'images':>8}{'plain s':>9}{'top-k s':>9}{'plain img/s':>12}"
            f"{'top-k img/s':>12}{'top-k/plain':>20}{'paired cpu':>11}{'noise':>7}{'rounds':>7}  goal ≥{GOAL}×")  # fmt: skip
    print(head)
    print("─" * len(head))
    for r in results:
        s, ips = r["s_per_pass"], r["images_per_s"]
        ratio = f"{r['throughput top-k/plain']:.3f}× [{r['cpu throughput top-k/plain']:.3f}×]"
        print(f"{r['net']:<16}{r['input'][1]:>6}²  {r['inputs']:>7}{s['plain']:>9.2f}{s['top-k']:>9.2f}"
              f"{ips['plain']:>12.0f}{ips['top-k']:>12.0f}{ratio:>20}"
              f"{r['paired cpu throughput top-k/plain']:>10.3f}×{r['noise']:>6.0%}{r['rounds']:>7}"
              f"  {'ok' if r['meets_goal'] else 'MISSED'}")  # fmt: skip
    for r in results:
        print(f"  {r['net']}: layers {', '.join(r['layers'])}; equal to the brute-force oracle on"
              f" {r['vs_oracle']['inputs']} images (values, indices, positions exact)")  # fmt: skip
    if mem:
        print()
        print(f"peak memory growth during one streamed pass, zoo:{MEMORY_NET} at 112² (MB of resident set above"
              " the process's before the pass; each in a fresh process; images generated per index, never held):")  # fmt: skip

        def mb(v: float | None) -> str:
            return "n/a" if v is None else f"{v:7.1f}"

        for m in mem:
            print(f"  {m['inputs']:>7,} images (held: {m['if_held_mb']:8.0f} MB):  plain {mb(m['plain']['peak_mb'])}"
                  f"   top-k {mb(m['top-k']['peak_mb'])}   (top-k pass {m['top-k']['s']:.0f} s,"
                  f" {m['top-k']['images_per_s']:.0f} img/s; plain {m['plain']['images_per_s']:.0f} img/s)")  # fmt: skip
        tk = [m["top-k"]["peak_mb"] for m in mem]
        if None not in tk:
            print(f"  top-k peak at {mem[-1]['inputs']:,} vs {mem[0]['inputs']:,} images: {tk[-1] - tk[0]:+.1f} MB"
                  f" (the images would have grown by {mem[-1]['if_held_mb'] - mem[0]['if_held_mb']:.0f} MB)")  # fmt: skip
    if est is not None:
        print()
        line = f"ImageNet ({IMAGENET:,} images) top-9 over zoo:{MEMORY_NET} layers conv1-5 at 112², one thread here:"
        print(line)
        if "hours_wall" in est:
            print(f"  {est['hours_wall']:6.2f} h at the timed rate ({est['rate_wall']:.0f} img/s wall);"
                  f" {est['hours_cpu']:.2f} h at its CPU-time rate ({est['rate_cpu']:.0f} img/s, an unshared core)")  # fmt: skip
        if "hours_streamed" in est:
            print(f"  {est['hours_streamed']:6.2f} h at the streamed rate of the {est['streamed_inputs']:,}-image"
                  f" memory run ({est['rate_streamed']:.0f} img/s, image generation included)")  # fmt: skip
        print(
            f"  DeepVis: {DEEPVIS_HOURS:.0f} h (CaffeNet at 227², Caffe). Decoding/resizing JPEGs not included here."
        )
    print()
    print(f"load average (1/5/15 min) before {meta['load_before']}, after {meta['load_after']}")
    missed = [r["net"] for r in results if not r["meets_goal"]]
    verdict = "met on every net" if not missed else f"MISSED on {', '.join(missed)}"
    print(f"goal: top-k throughput ≥ {GOAL}× the plain forward pass (wall) — {verdict}")
    for r in results:
        if "profile" in r:
            print(f"\ncProfile of one top-k pass, {r['net']} ({r['inputs']} images), by own time:")
            print(r["profile"])


def stimulus_rows(units: int, *, steps: int) -> list[dict[str, Any]]:
    """Optimal stimulus (Optimize, Lucent style): CPU and wall seconds per unit for `steps` steps,
    on the shipped trained nets at 64² (convnetjs-cifar, fully convolutional up to conv3) and
    112² (zfnet-small, its own input size)."""
    from convscope.analysis.units.optimize import Optimize
    from convscope.inspect import open_model

    rows = []
    print(f"optimal stimulus, {steps} steps, {units} units per layer:", flush=True)
    for spec, layer, size in (("zoo:convnetjs-cifar", "conv3", 64), ("zoo:zfnet-small", "conv5", 112)):
        loaded = open_model(spec)
        cpu, wall = [], []
        for ch in range(units):
            c0, w0 = time.process_time(), time.perf_counter()
            Optimize(loaded.model, layer=layer, channel=ch, mean=loaded.mean, std=loaded.std).run(
                steps=steps, size=size, seed=0
            )
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        row = {"model": spec, "layer": layer, "size": size, "steps": steps, "units": units,
               "cpu_s_per_unit": round(statistics.median(cpu), 3), "wall_s_per_unit": round(statistics.median(wall), 3)}  # fmt: skip
        print(f"  {spec} {layer} at {size}²: {row['cpu_s_per_unit']} s CPU, {row['wall_s_per_unit']} s wall per unit (median)", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="256 images, 3 rounds, memory at 100/1k/5k: a smoke run",
    )
    ap.add_argument("--only", choices=[c.key for c in CASES], help="time one net only")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads; 0 = torch's default (default 1)"
    )
    ap.add_argument(
        "--inputs", type=int, help=f"images per timed pass (default {INPUTS}; 256 with --quick)"
    )
    ap.add_argument("--sizes", type=lambda s: tuple(int(v) for v in s.split(",")),
                    help="memory run's dataset sizes, comma-separated (default 1000,10000,50000); 0 = none")  # fmt: skip
    ap.add_argument("--profile", action="store_true", help="also cProfile one top-k pass per net")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    ap.add_argument("--memory-child", nargs=2, metavar=("N", "WHAT"), help=argparse.SUPPRESS)
    ap.add_argument("--stimulus-units", type=int, default=4,
                    help="units per net for the optimal-stimulus timing (256 steps); 0 = none")  # fmt: skip
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(int(args.memory_child[0]), args.memory_child[1])))
        return 0

    inputs = args.inputs or (256 if args.quick else INPUTS)
    sizes = args.sizes or (tuple(s // 10 for s in MEMORY_SIZES) if args.quick else MEMORY_SIZES)
    sizes = tuple(s for s in sizes if s > 0)
    cases = [c for c in CASES if args.only is None or c.key == args.only]
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "units_uncommitted": uncommitted(),  # files of the measured package not in `commit`
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "batch": BATCH,
        "k": K,
        "weights": "random init (torch.manual_seed(0))",
        "data": "uniform noise images: a tensor for the timing, generated per index for the memory run",
        "memory_measure": "peak RSS growth (VmHWM reset via /proc/self/clear_refs, minus VmRSS before), fresh process",
        "load_before": load_average(),
        "goal_topk_over_plain_throughput": GOAL,
    }
    t0 = time.perf_counter()
    print(f"timing {len(cases)} net(s), {inputs} images per pass:", flush=True)
    results = [run_case(c, quick=args.quick, inputs=inputs, profile=args.profile) for c in cases]
    print(
        f"memory, zoo:{MEMORY_NET}, one fresh process each:" if sizes else "memory: skipped",
        flush=True,
    )
    mem = memory_rows(sizes, torch.get_num_threads()) if sizes else []
    est = imagenet_estimate(results, mem)
    stim = stimulus_rows(args.stimulus_units, steps=32 if args.quick else 256) if args.stimulus_units else []
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["load_after"] = load_average()
    print_report(results, mem, est, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"meta": meta, "results": results, "memory": mem, "imagenet": est, "stimulus": stim}, indent=1)
        + "\n"
    )
    print(f"wrote {args.out} ({meta['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
