"""Projection benchmark: guided backprop, deconvnet and Grad-CAM next to a plain pass and Captum.

    make bench                                        # = ... then .venv/bin/python bench/projections.py
    .venv/bin/python bench/projections.py             # the full run (about 5 minutes on 2 busy cores)
    .venv/bin/python bench/projections.py --quick     # 3 rounds, short samples: a smoke run
    .venv/bin/python bench/projections.py --only cifar
    .venv/bin/python bench/projections.py --threads 0 # torch's own thread count (default here: 1)

Issue 11, "Speed". For each (net, batch) — zoo:resnet18-shaped at batch 1 (3×224×224) and
zoo:convnetjs-cifar at batch 64 (3×32×32), random init, eval mode, target class 3 — and each
method, three contenders are timed interleaved in the same run (plain, ours, captum, then
ours, captum, plain, ...: bench/_timing.py rotates the start):

    plain     xg = x.detach().requires_grad_(); torch.autograd.grad(model(xg)[:, t].sum(), xg)
    ours      GuidedBackprop(model).attribute(x, target=t)             convscope.analysis.attribution
              Deconvnet(model).attribute(x, target=t)
              GradCAM(model, layer=L).attribute(x, target=t)           L = "layer4" / "conv3"
    captum    captum.attr.GuidedBackprop(model).attribute(x, target=t)
              captum.attr.Deconvolution(model).attribute(x, target=t)
              captum.attr.LayerGradCam(model, M).attribute(x, target=t, relu_attributions=True)
                                                                       M = model.layer4 / model.relu3

Every timed call builds its method object (as a user writes it). Grad-CAM's backward stops at
its layer, so it may well be faster than the plain pass (which goes down to x). Before timing,
ours is checked once against Captum on the same inputs (atol = rtol = 1e-5; the bench stops if
they differ), so a fast wrong answer cannot be measured. Reported: median ms per call (wall)
and the ratios ours/plain, captum/plain, ours/captum, by wall time and by this process's CPU
time (steadier on a shared machine: wall time includes waiting for a core), and the noise
(largest inter-quartile spread of the three). Goal: ours ≤ 1.05× plain (Captum measured
1.05–1.11× in the issue). Torch threads: 1 by default (on a 2-core machine other processes keep
busy, two torch threads wait on each other). The load average before and after is printed.
Results go to bench/results/projections.json. Timing method: bench/_timing.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import captum
import torch
from _timing import Contender, Timing, compare, git_commit, load_average
from captum.attr import Deconvolution, LayerGradCam
from captum.attr import GuidedBackprop as CaptumGuided
from torch import Tensor, nn

from convscope.analysis.attribution import Deconvnet, GradCAM, GuidedBackprop
from convscope.models import resolve_model

GOAL = 1.05  # ours / plain, every method at every size
TOL = 1e-5  # ours vs Captum, absolute and relative
TARGET = 3  # the class whose score starts every backward
RESULTS = Path(__file__).resolve().parent / "results" / "projections.json"
NETS = {"resnet": "resnet18-shaped", "cifar": "convnetjs-cifar"}
METHODS = ("guided", "deconvnet", "gradcam")
TOOLS = ("plain", "ours", "captum")

warnings.filterwarnings("ignore", module="captum")  # its notes on backward hooks, once per call


@dataclass(frozen=True)
class Case:
    net: str  # zoo name
    batch: int
    layer: str  # Grad-CAM's layer, as convscope names it
    captum_layer: str  # the same tensor as a module for Captum's LayerGradCam
    budget_s: float  # seconds of timed rounds per method (full run); min repeats still apply


CASES = (
    Case("resnet18-shaped", 1, layer="layer4", captum_layer="layer4", budget_s=45),
    Case("convnetjs-cifar", 64, layer="conv3", captum_layer="relu3", budget_s=30),
)


# ---- the contenders ---------------------------------------------------------------------
def plain(model: nn.Module, x: Tensor) -> Tensor:
    """A forward and an input-only backward of the target's score: what every method adds to."""
    xg = x.detach().requires_grad_(True)  # (B, C, H, W)
    out = model(xg)  # (B, classes)
    (grad,) = torch.autograd.grad(out[:, TARGET].sum(), xg)
    return grad


def ours(method: str, model: nn.Module, x: Tensor, case: Case) -> Tensor:
    if method == "guided":
        return GuidedBackprop(model).attribute(x, target=TARGET)
    if method == "deconvnet":
        return Deconvnet(model).attribute(x, target=TARGET)
    return GradCAM(model, layer=case.layer).attribute(x, target=TARGET)  # (B, 1, h, w)


def theirs(method: str, model: nn.Module, x: Tensor, case: Case) -> Tensor:
    out: Tensor
    if method == "guided":
        out = CaptumGuided(model).attribute(x, target=TARGET)
    elif method == "deconvnet":
        out = Deconvolution(model).attribute(x, target=TARGET)
    else:
        module = model.get_submodule(case.captum_layer)
        out = LayerGradCam(model, module).attribute(x, target=TARGET, relu_attributions=True)
    return out


def contenders(method: str, model: nn.Module, x: Tensor, case: Case) -> list[Contender]:
    return [
        Contender("plain", lambda: plain(model, x)),
        Contender("ours", lambda: ours(method, model, x, case)),
        Contender("captum", lambda: theirs(method, model, x, case)),
    ]


# ---- equal to Captum (checked once, untimed) --------------------------------------------
def check_equal(method: str, model: nn.Module, x: Tensor, case: Case) -> dict[str, float | None]:
    a = ours(method, model, x, case).as_subclass(Tensor)
    b = theirs(method, model, x.clone(), case).detach()
    scale = float(b.abs().max())
    diff = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
    # the rule is really applied: guided/deconvnet differ from the plain input gradient
    off_plain = float((a - plain(model, x)).abs().max()) if method != "gradcam" else None
    try:
        torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)
    except AssertionError as err:
        raise SystemExit(
            f"ours differs from Captum on {case.net} B={case.batch} {method}: not timing a wrong"
            f" answer (max |diff| {diff:.3g}, max |captum| {scale:.3g})\n{err}"
        ) from None
    if off_plain == 0.0:
        raise SystemExit(f"{method} on {case.net} equals the plain gradient: no rule was applied")
    return {"max_abs_diff": diff, "max_abs_captum": scale, "max_abs_diff_from_plain": off_plain}


def uncommitted(path: str = "src/convscope/analysis/attribution") -> list[str] | None:
    """Files under `path` that differ from the recorded commit (the bench ran on these)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", path],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return [line[3:] for line in out.stdout.splitlines()]


# ---- running and reporting --------------------------------------------------------------
def run_case(case: Case, *, quick: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    model, entry = resolve_model(f"zoo:{case.net}")
    model.eval()
    assert entry is not None
    x = torch.randn(case.batch, *entry.input_shape)  # (B, C, H, W)
    rows = {}
    for method in METHODS:
        t0 = time.perf_counter()
        print(f"  {case.net} B={case.batch} {method}: ", end="", flush=True)
        equal = check_equal(method, model, x, case)
        timings = compare(
            contenders(method, model, x, case),
            repeats=3 if quick else 41,
            min_repeats=3 if quick else 11,
            warmup=2,
            min_sample_s=0.01 if quick else 0.15,
            budget_s=None if quick else case.budget_s,
            on_round=lambda r: print(r, end=" ", flush=True),
        )
        print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
        rows[method] = summarize(timings) | {"vs_captum": equal}
    return {"net": case.net, "batch": case.batch, "gradcam_layer": case.layer,
            "captum_gradcam_layer": case.captum_layer, "methods": rows}  # fmt: skip


def summarize(t: dict[str, Timing]) -> dict[str, Any]:
    ms = {tool: t[tool].median * 1e3 for tool in TOOLS}
    cpu = {tool: t[tool].cpu_median * 1e3 for tool in TOOLS}
    return {
        "ms": ms,
        "cpu_ms": cpu,
        "ours/plain": ms["ours"] / ms["plain"],
        "captum/plain": ms["captum"] / ms["plain"],
        "ours/captum": ms["ours"] / ms["captum"],
        "cpu ours/plain": cpu["ours"] / cpu["plain"],
        "cpu captum/plain": cpu["captum"] / cpu["plain"],
        "cpu ours/captum": cpu["ours"] / cpu["captum"],
        # median over rounds of the per-round CPU ratio (neighbouring samples: least noise)
        "paired cpu ours/plain": _paired(t["ours"], t["plain"]),
        "paired cpu captum/plain": _paired(t["captum"], t["plain"]),
        "noise": max(t[tool].spread for tool in TOOLS),
        "meets_goal": ms["ours"] / ms["plain"] <= GOAL,
        "rounds": len(t["plain"].samples),
        "timings": {name: timing.as_dict() for name, timing in t.items()},
    }


def _paired(a: Timing, b: Timing) -> float:
    return statistics.median(x / y for x, y in zip(a.cpu_samples, b.cpu_samples, strict=True))


def print_report(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    print()
    print(
        f"convscope projection benchmark — torch {meta['torch']}, captum {meta['captum']},"
        f" {meta['threads']} torch thread(s) on {meta['cpus']} CPUs, eval mode, target {TARGET},"
        " median ms per call (wall); ratios by wall time [by CPU time]"
    )
    head = (
        f"{'net':<16} {'B':>3}  {'method':<10}{'plain':>9}{'ours':>9}{'captum':>9}"
        f"{'ours/plain':>18}{'captum/plain':>18}{'ours/captum':>18}{'noise':>7}  goal ≤{GOAL}×"
    )
    print(head)
    print("─" * len(head))
    for r in results:
        for i, method in enumerate(METHODS):
            row = r["methods"][method]
            ms = row["ms"]
            label = f"{r['net']:<16} {r['batch']:>3}" if i == 0 else " " * 20

            def ratio(key: str, row: dict[str, Any] = row) -> str:
                return f"{row[key]:.3f}× [{row['cpu ' + key]:.3f}×]"

            print(
                f"{label}  {method:<10}{ms['plain']:>9.2f}{ms['ours']:>9.2f}{ms['captum']:>9.2f}"
                f"{ratio('ours/plain'):>18}{ratio('captum/plain'):>18}{ratio('ours/captum'):>18}"
                f"{row['noise']:>6.0%}  {'ok' if row['meets_goal'] else 'MISSED'}"
            )
    print()
    diffs = ", ".join(
        f"{r['net']} {m} {r['methods'][m]['vs_captum']['max_abs_diff']:.1e}"
        for r in results for m in METHODS
    )  # fmt: skip
    print(f"ours = Captum within {TOL:g} (max |diff|): {diffs}")
    paired = ", ".join(
        f"{r['net']} {m} {r['methods'][m]['paired cpu ours/plain']:.3f}×"
        f" [captum {r['methods'][m]['paired cpu captum/plain']:.3f}×]"
        for r in results for m in METHODS
    )  # fmt: skip
    print(f"ours/plain, median of the per-round CPU ratios: {paired}")
    print(f"load average (1/5/15 min) before {meta['load_before']}, after {meta['load_after']}")
    rounds = ", ".join(
        f"{r['net']} {m}: {r['methods'][m]['rounds']}" for r in results for m in METHODS
    )
    print(f"rounds (interleaved samples per contender): {rounds}")
    missed = [
        f"{r['net']} B={r['batch']} {m}" for r in results for m in METHODS
        if not r["methods"][m]["meets_goal"]
    ]  # fmt: skip
    verdict = "met everywhere" if not missed else f"MISSED at {', '.join(missed)}"
    print(f"goal: ours ≤ {GOAL}× the plain pass (wall) — {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="3 rounds, short samples: a smoke run")
    ap.add_argument("--only", choices=sorted(NETS), help="run one net only")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads; 0 = torch's default (default 1)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [c for c in CASES if args.only is None or c.net == NETS[args.only]]
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "attribution_uncommitted": uncommitted(),  # files of the measured code not in `commit`
        "torch": torch.__version__,
        "captum": getattr(captum, "__version__", "?"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "target": TARGET,
        "load_before": load_average(),
        "goal_ours_over_plain": GOAL,
        "tolerance_vs_captum": TOL,
    }
    print(f"timing {len(cases)} case(s) × {len(METHODS)} methods, rounds done so far:", flush=True)
    t0 = time.perf_counter()
    results = [run_case(c, quick=args.quick) for c in cases]
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["load_after"] = load_average()
    print_report(results, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"wrote {args.out} ({meta['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
