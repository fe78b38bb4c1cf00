"""Capture benchmark: what does recording every block cost, next to a plain pass and TorchLens?

    make bench                                    # = .venv/bin/python bench/capture.py
    .venv/bin/python bench/capture.py --quick     # fewer repeats: a smoke run
    .venv/bin/python bench/capture.py --only cifar
    .venv/bin/python bench/capture.py --threads 1  # a busy shared machine: no thread contention

For each (net, batch) — a ResNet-style stack (6 × conv → BN → ReLU(inplace), 32 channels) at 4
(3×160×160), resnet18-shaped at 1 and 8 (3×224×224), convnetjs-cifar at 1 and 64 (3×32×32),
eval mode, random init, grad mode on — it times, interleaved in the same run:

    plain fwd        model(x)
    probe fwd        with Probe(model): model(x)             default Probe: every block, all fields
    torchlens fwd    tl.trace(model, x, capture=CaptureOptions(layers_to_save="all"))
    plain fwd+bwd    model(x).sum().backward()
    probe fwd+bwd    with Probe(model): model(x).sum().backward()
    probe-a fwd+bwd  the same with Probe(model, keep=("a",)): activation maps only
    torchlens f+b    tl.trace(..., save_grads=True) then trace.log_backward(out.sum())
    probe set-up     with Probe(model): pass                  construction + hook (de)registration

Every timed call includes its own set-up (the Probe is built, entered and left per call, as
TorchLens traces per call); fwd+bwd calls start with `model.zero_grad(set_to_none=True)`.
TorchLens patches torch's functions globally and keeps them patched; its patches are
installed before and removed after each of its samples, untimed, so the plain and probe
numbers run on an unpatched torch. Reported: median ms per call, probe/plain (the median of the
rounds' own ratios: a slow spell of the shared machine slows both samples of a round) and
torchlens/plain, the noise (largest inter-quartile spread in the row), and the tensor memory
each capture keeps; the probe/plain ratio of wall time and, beside it, of process CPU time; and,
measured once untimed, the kernel time and page faults per call: holding every field means more
memory per pass, and glibc's malloc by default hands big freed blocks back to the kernel, so
each pass faults its pages in anew (sys time). The first Probe of a process therefore asks glibc
to keep freed memory (src/convscope/capture/memory.py); this bench does that before timing, so
plain and probe run on the same allocator, and also times the plain passes in a child process
whose allocator nobody touched ("probe/untouched plain": what a user who adds a Probe to a
default process sees). `--default-malloc` (CONVSCOPE_MALLOC=default) leaves glibc alone to show
the churn. Goals (issue 10): probe ≤ 1.2× plain at batch ≥ 4, ≤ 1.5× at batch 1. Threads:
torch's default (it warns when other processes keep the CPUs busy: several torch threads then
wait on each other).
Results also go to bench/results/capture.json. Timing method: bench/_timing.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchlens as tl
from _timing import Contender, Timing, compare, git_commit, load_average, paired
from torch import Tensor, nn
from torchlens.backends.torch.wrappers import unwrap_torch, wrap_torch
from torchlens.options import CaptureOptions

from convscope.capture import Block, Probe, Trace
from convscope.capture.memory import keep_freed_memory
from convscope.models.zoo import ZOO

GOAL = 1.2  # probe / plain at batch ≥ 4, forward and forward+backward
GOAL_B1 = 1.5  # probe / plain at batch 1 (per-call Python work weighs more on a 0.5 ms forward)
RESULTS = Path(__file__).resolve().parent / "results" / "capture.json"
NETS = {"stack": "resnet-style-stack", "resnet": "resnet18-shaped", "cifar": "convnetjs-cifar"}


@dataclass(frozen=True)
class Case:
    net: str  # zoo name
    batch: int
    budget_s: float  # seconds of timed rounds allowed (full run); min repeats still apply


CASES = (
    Case("resnet-style-stack", 4, budget_s=60),
    Case("resnet18-shaped", 1, budget_s=55),
    Case("resnet18-shaped", 8, budget_s=85),
    Case("convnetjs-cifar", 1, budget_s=20),
    Case("convnetjs-cifar", 64, budget_s=25),
)
PASSES = ("fwd", "fwd+bwd")
TOOLS = ("plain", "probe", "torchlens")


def goal(batch: int) -> float:
    return GOAL_B1 if batch == 1 else GOAL


def resnet_style_stack(channels: int = 32, depth: int = 6) -> nn.Sequential:
    """Issue 10's ResNet-style stack: conv → BN → ReLU(inplace) pairs, then pool and a linear head."""
    layers: list[nn.Module] = []
    c_in = 3
    for _ in range(depth):
        layers += [nn.Conv2d(c_in, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        c_in = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)]
    return nn.Sequential(*layers)


def build(net: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The model (eval mode) and its per-example input shape."""
    if net == "resnet-style-stack":
        return resnet_style_stack().eval(), (3, 160, 160)
    entry = ZOO[net]
    return entry.factory().eval(), tuple(entry.input_shape)


# ---- the contenders ---------------------------------------------------------------------
def _tl_fwd(model: nn.Module, x: Tensor) -> Any:
    return tl.trace(model, x, capture=CaptureOptions(layers_to_save="all"))


def _tl_fwd_bwd(model: nn.Module, x: Tensor) -> Any:
    model.zero_grad(set_to_none=True)
    trace = tl.trace(model, x, capture=CaptureOptions(layers_to_save="all", save_grads=True))
    out = trace[trace.output_layers[0]].out  # (B, classes), graph-connected
    trace.log_backward(out.sum())
    return trace


def _probe_fwd(model: nn.Module, x: Tensor) -> Trace:
    with Probe(model) as probe:
        model(x)
    return probe.trace


def _probe_fwd_bwd(model: nn.Module, x: Tensor) -> Trace:
    model.zero_grad(set_to_none=True)
    with Probe(model) as probe:
        model(x).sum().backward()
    return probe.trace


def _probe_a_fwd_bwd(model: nn.Module, x: Tensor) -> Trace:
    model.zero_grad(set_to_none=True)
    with Probe(model, keep=("a",)) as probe:
        model(x).sum().backward()
    return probe.trace


def _plain_fwd_bwd(model: nn.Module, x: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()


def _probe_setup(model: nn.Module) -> None:
    with Probe(model):
        pass


def contenders(model: nn.Module, x: Tensor) -> list[Contender]:
    patched = {"setup": wrap_torch, "teardown": unwrap_torch}  # TorchLens's global patches
    return [
        Contender("plain fwd", lambda: model(x)),
        Contender("probe fwd", lambda: _probe_fwd(model, x)),
        Contender("torchlens fwd", lambda: _tl_fwd(model, x), **patched),
        Contender("plain fwd+bwd", lambda: _plain_fwd_bwd(model, x)),
        Contender("probe fwd+bwd", lambda: _probe_fwd_bwd(model, x)),
        Contender("probe-a fwd+bwd", lambda: _probe_a_fwd_bwd(model, x)),
        Contender("torchlens fwd+bwd", lambda: _tl_fwd_bwd(model, x), **patched),
        Contender("probe set-up", lambda: _probe_setup(model)),
    ]


# ---- what each capture holds (checked once, untimed) ------------------------------------
def _kept_bytes(tensors: Iterable[Tensor | None]) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one storage count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is not None:
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def probe_holdings(model: nn.Module, x: Tensor) -> dict[str, Any]:
    trace = _probe_fwd_bwd(model, x)
    fields = ("x", "conv", "z", "a", "weight", "bias", "grad_weight", "grad_bias", "grad_a")
    tensors = [getattr(b, f) for b in trace.values() for f in fields]
    tensors += [b.grad_z for b in trace.values()]
    return {"blocks": len(trace), "complete": all(map(_complete, trace.values())),
            "kept_bytes": _kept_bytes(tensors)}  # fmt: skip


def _complete(b: Block) -> bool:
    """The block has z and dL/dz; with an activation a and dL/da; with filters W and dL/dW."""
    need = [b.z, b.grad_z]
    if b.activation is not None:
        need += [b.a, b.grad_a]
    if b.kind != "activation":
        need += [b.weight, b.grad_weight]
    return all(t is not None for t in need)


def torchlens_holdings(model: nn.Module, x: Tensor) -> dict[str, Any]:
    wrap_torch()
    try:
        trace = _tl_fwd_bwd(model, x)
    finally:
        unwrap_torch()
    layers = [trace[label] for label in trace.layer_labels]
    tensors = [layer.out for layer in layers] + [layer.grad for layer in layers]
    return {
        "layers": len(layers),
        "saved": int(trace.num_saved_layers),
        "saved_grads": int(trace.num_saved_grad_layers),
        "kept_bytes": _kept_bytes(tensors),
    }


def kernel_cost(fn: Any, calls: int = 3) -> dict[str, float]:
    """Kernel (sys) CPU ms and minor page faults per call, after one warm call."""
    fn()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        fn()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sys_ms": (r1.ru_stime - r0.ru_stime) / calls * 1e3,
        "user_ms": (r1.ru_utime - r0.ru_utime) / calls * 1e3,
        "page_faults": (r1.ru_minflt - r0.ru_minflt) / calls,
    }


def untouched_plain(case: Case, *, quick: bool) -> dict[str, float]:
    """Median ms of the plain passes in a child process whose allocator nobody touched."""
    env = {**os.environ, "CONVSCOPE_MALLOC": "default"}
    cmd = [sys.executable, __file__, "--plain-child", case.net, str(case.batch), str(torch.get_num_threads())]
    if quick:
        cmd.append("--quick")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=900)
    out: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def plain_child(net: str, batch: int, threads: int, quick: bool) -> None:
    """The child side of untouched_plain: prints {"fwd": ms, "fwd+bwd": ms} (medians)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, shape = build(net)
    x = torch.randn(batch, *shape)
    timings = compare(
        [Contender("plain fwd", lambda: model(x)), Contender("plain fwd+bwd", lambda: _plain_fwd_bwd(model, x))],
        repeats=3 if quick else 9, min_repeats=3, warmup=1, min_sample_s=0.01 if quick else 0.04,
    )  # fmt: skip
    print(json.dumps({p: timings[f"plain {p}"].median * 1e3 for p in PASSES}))


# ---- running and reporting --------------------------------------------------------------
def run_case(case: Case, *, quick: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    model, shape = build(case.net)
    x = torch.randn(case.batch, *shape)  # (B, C, H, W)
    t0 = time.perf_counter()
    print(f"  {case.net} B={case.batch}: ", end="", flush=True)
    timings = compare(
        contenders(model, x),
        repeats=3 if quick else 15,
        min_repeats=3 if quick else 5,
        warmup=1,
        min_sample_s=0.01 if quick else 0.04,
        budget_s=None if quick else case.budget_s,
        on_round=lambda r: print(r, end=" ", flush=True),
    )
    held = {"probe": probe_holdings(model, x), "torchlens": torchlens_holdings(model, x)}
    held["kernel"] = {
        "plain fwd+bwd": kernel_cost(lambda: _plain_fwd_bwd(model, x)),
        "probe fwd+bwd": kernel_cost(lambda: _probe_fwd_bwd(model, x)),
    }
    held["untouched plain ms"] = untouched_plain(case, quick=quick)
    print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return summarize(case, timings, held)


def summarize(case: Case, t: dict[str, Timing], held: dict[str, Any]) -> dict[str, Any]:
    rows = {}
    for p in PASSES:
        ms = {tool: t[f"{tool} {p}"].median * 1e3 for tool in TOOLS}
        cpu = {tool: t[f"{tool} {p}"].cpu_median * 1e3 for tool in ("plain", "probe")}
        probe, plain = t[f"probe {p}"], t[f"plain {p}"]
        ratio = paired(probe.samples, plain.samples)  # the rounds' own ratios: slow spells cancel
        rows[p] = {
            "ms": ms,
            "cpu_ms": cpu,
            "probe/plain": ratio,
            "probe/plain cpu": paired(probe.cpu_samples, plain.cpu_samples),
            "probe/plain of medians": ms["probe"] / ms["plain"],
            "torchlens/plain": ms["torchlens"] / ms["plain"],
            "noise": max(t[f"{tool} {p}"].spread for tool in TOOLS),
            "meets_goal": ratio <= goal(case.batch),
            "probe/untouched plain": ms["probe"] / held["untouched plain ms"][p],
        }
    plain_fb = t["plain fwd+bwd"]
    rows["fwd+bwd"]["probe-a/plain"] = paired(t["probe-a fwd+bwd"].samples, plain_fb.samples)
    rows["fwd+bwd"]["probe-a/plain cpu"] = paired(t["probe-a fwd+bwd"].cpu_samples, plain_fb.cpu_samples)
    setup_ms = t["probe set-up"].median * 1e3
    overhead_ms = rows["fwd"]["ms"]["probe"] - rows["fwd"]["ms"]["plain"]
    return {
        "net": case.net,
        "batch": case.batch,
        "passes": rows,
        "probe_setup_ms": setup_ms,
        "probe_setup_share_of_fwd_overhead": setup_ms / overhead_ms if overhead_ms > 0 else None,
        "holdings": held,
        "rounds": len(t["plain fwd"].samples),
        "timings": {name: timing.as_dict() for name, timing in t.items()},
    }


def print_report(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    print()
    print(
        f"convscope capture benchmark — torch {meta['torch']}, torchlens {meta['torchlens']}, "
        f"{meta['threads']} torch threads on {meta['cpus']} CPUs, eval mode, median ms per call"
    )
    head = (
        f"{'net':<18} {'B':>3}  {'pass':<8}{'plain':>10}{'probe':>10}{'torchlens':>11}"
        f"{'probe/plain':>13}{'(cpu)':>7}{'tl/plain':>10}{'noise':>7}  goal"
    )
    print(head)
    print("─" * len(head))
    for r in results:
        for i, p in enumerate(PASSES):
            row = r["passes"][p]
            ms = row["ms"]
            label = f"{r['net']:<18} {r['batch']:>3}" if i == 0 else " " * 22
            print(
                f"{label}  {p:<8}{ms['plain']:>10.2f}{ms['probe']:>10.2f}{ms['torchlens']:>11.1f}"
                f"{row['probe/plain']:>12.2f}×{row['probe/plain cpu']:>6.2f}×{row['torchlens/plain']:>9.1f}×"
                f"{row['noise']:>6.0%}  ≤{goal(r['batch'])}× {'ok' if row['meets_goal'] else 'MISSED'}"
            )
    print()
    print("probe set-up = Probe(model) + enter + exit with no forward (hook registration/removal):")
    for r in results:
        fwd = r["passes"]["fwd"]["ms"]
        share = r["probe_setup_share_of_fwd_overhead"]
        share_s = f"{share:.0%} of the probe's fwd overhead" if share is not None else "no overhead"
        print(
            f"  {r['net']:<18} B={r['batch']:<3} {r['probe_setup_ms']:7.3f} ms"
            f" = {r['probe_setup_ms'] / fwd['plain']:6.1%} of plain fwd, {share_s}"
        )
    print()
    print("fwd+bwd keeping activation maps only (keep=('a',)), probe-a/plain wall (cpu):")
    for r in results:
        row = r["passes"]["fwd+bwd"]
        print(f"  {r['net']:<18} B={r['batch']:<3} {row['probe-a/plain']:.2f}× ({row['probe-a/plain cpu']:.2f}×)")
    print()
    print(
        "plain in a process whose allocator nobody touched (a child process, glibc defaults),"
        " and probe (this process) / that:"
    )
    for r in results:
        u = r["holdings"]["untouched plain ms"]
        line = "  ".join(
            f"{p} {u[p]:9.2f} ms, probe/it {r['passes'][p]['probe/untouched plain']:5.2f}×" for p in PASSES
        )
        print(f"  {r['net']:<18} B={r['batch']:<3} {line}")
    print()
    print("per fwd+bwd call, measured untimed: user / kernel CPU ms and minor page faults")
    for r in results:
        k = r["holdings"]["kernel"]
        line = "  ".join(
            f"{who} {v['user_ms']:7.1f} / {v['sys_ms']:6.1f} ms, {v['page_faults']:8.0f} faults"
            for who, v in (("plain", k["plain fwd+bwd"]), ("probe", k["probe fwd+bwd"]))
        )
        print(f"  {r['net']:<18} B={r['batch']:<3} {line}")
    print()
    print("what a fwd+bwd capture keeps (distinct tensor storages):")
    for r in results:
        p, t = r["holdings"]["probe"], r["holdings"]["torchlens"]
        print(
            f"  {r['net']:<18} B={r['batch']:<3} probe {p['kept_bytes'] / 2**20:8.1f} MB"
            f" ({p['blocks']} blocks{'' if p['complete'] else ', INCOMPLETE'}),"
            f"  torchlens {t['kept_bytes'] / 2**20:8.1f} MB"
            f" ({t['saved']}/{t['layers']} layers, {t['saved_grads']} with grads)"
        )
    print()
    if _contended(meta):
        print("warning: the machine was busy (see above): ratios near 1 may be thread contention")
    print(f"load average (1/5/15 min) before {meta['load_before']}, after {meta['load_after']}")
    rounds = ", ".join(f"{r['net']} B={r['batch']}: {r['rounds']}" for r in results)
    print(f"rounds (interleaved samples per contender): {rounds}")
    missed = [
        f"{r['net']} B={r['batch']} {p}" for r in results for p in PASSES
        if not r["passes"][p]["meets_goal"]
    ]  # fmt: skip
    verdict = "met at every size" if not missed else f"MISSED at {', '.join(missed)}"
    memory = meta["malloc"]
    print(f"goal: capture ≤ {GOAL}× plain at batch ≥ 4, ≤ {GOAL_B1}× at batch 1 ({memory}) — {verdict}")


def _contended(meta: dict[str, Any]) -> bool:
    """Several torch threads on a machine that other processes keep busy (1-min load ≥ 1)."""
    load = meta["load_before"]
    return load is not None and load[0] >= 1.0 and meta["threads"] > 1






def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="3 rounds, short samples: a smoke run")
    ap.add_argument("--only", choices=sorted(NETS), help="run one net only")
    ap.add_argument(
        "--threads", type=int, help="torch threads (default: torch's own default for this machine)"
    )
    ap.add_argument(
        "--default-malloc", action="store_true",
        help="CONVSCOPE_MALLOC=default: leave glibc's malloc as it is (big freed blocks go back to"
        " the kernel and are faulted in again every pass)",
    )  # fmt: skip
    ap.add_argument("--plain-child", nargs=3, metavar=("NET", "B", "THREADS"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = ap.parse_args(argv)

    if args.plain_child:
        net, batch, threads = args.plain_child
        plain_child(net, int(batch), int(threads), args.quick)
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.default_malloc:
        os.environ["CONVSCOPE_MALLOC"] = "default"
    # what the first Probe does in any process (capture/memory.py), done before timing so the
    # plain passes run on the same allocator as the probe's
    malloc = keep_freed_memory()
    cases = [c for c in CASES if args.only is None or c.net == NETS[args.only]]
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "torchlens": getattr(tl, "__version__", "?"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "load_before": load_average(),
        "goal_probe_over_plain": GOAL,
        "goal_probe_over_plain_batch1": GOAL_B1,
        "malloc": malloc.reason,
    }
    if _contended(meta):
        print(
            f"warning: load average {meta['load_before'][0]} before starting: other processes use"
            f" the CPUs, and {meta['threads']} torch threads then wait for each other (small ops"
            " slow down many-fold, hiding the probe's overhead); compare with --threads 1"
        )
    print(f"timing {len(cases)} case(s), rounds done so far:", flush=True)
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
