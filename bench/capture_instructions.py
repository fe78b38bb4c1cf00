"""What a full capture costs in CPU instructions, counted by valgrind: a measure a noisy machine cannot move.

    .venv/bin/python bench/capture_instructions.py              # convnetjs-cifar at batch 1 (~6 min)
    .venv/bin/python bench/capture_instructions.py --calls 50   # quicker
    PYTHONPATH=/some/other/src .venv/bin/python bench/capture_instructions.py   # another convscope

On a shared machine whose speed swings by ±40% between samples, bench/capture.py's wall and CPU
ratios of a 0.5 ms forward move by tenths. This runs the same calls as capture.py's convnetjs-cifar
batch-1 row (plain forward, probe forward, plain forward+backward, probe forward+backward, and the
probe's set-up alone) under `valgrind --tool=callgrind`, each phase `--calls` times after a
warm-up, and prints the instructions per call and the probe's extra instructions over plain. The
phases are told apart by a dump callgrind makes each time the child calls `getppid()`.

Instructions are not time: torch's kernels run several instructions a cycle, the probe's Python
about one, so a probe/plain ratio of instructions is smaller than the time ratio (at batch 1 a
probe forward of 1.42× the instructions took ~1.9× the time). Use it to compare two versions of
the probe's code on the same work; use bench/capture.py for the ratio against the goal.
Needs valgrind (Debian's `valgrind`); nothing is installed by this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

PHASES = ("plain fwd", "probe fwd", "plain fwd+bwd", "probe fwd+bwd", "probe set-up")


def _calls() -> dict[str, Callable[[], object]]:
    import torch

    import convscope as cs
    from convscope.models.zoo import get_entry

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = get_entry("convnetjs-cifar").factory().eval()
    x = torch.randn(1, 3, 32, 32)

    def plain_fwd() -> object:
        return model(x)

    def probe_fwd() -> object:
        with cs.Probe(model):
            return model(x)

    def plain_fb() -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    def probe_fb() -> None:
        model.zero_grad(set_to_none=True)
        with cs.Probe(model):
            model(x).sum().backward()

    def setup() -> None:
        with cs.Probe(model):
            pass

    return dict(zip(PHASES, (plain_fwd, probe_fwd, plain_fb, probe_fb, setup), strict=True))


def child(calls: int) -> None:
    """Runs under callgrind: warm up, then each phase between two `getppid()` calls."""
    fns = _calls()
    for fn in fns.values():
        for _ in range(5):
            fn()
    for fn in fns.values():
        os.getppid()  # callgrind dumps the counts so far: the previous phase ends here
        for _ in range(calls):
            fn()
    os.getppid()


def _total(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {dump}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--calls", type=int, default=100, help="calls per phase (default 100)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.calls)
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("capture_instructions: valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = [valgrind, "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={out}",
               sys.executable, __file__, "--child", "--calls", str(args.calls)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"capture_instructions: valgrind failed ({done.returncode}): {done.stderr[-2000:]}")
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        # dump 1 is the import and warm-up; then one per phase (the last part, after the final
        # getppid, is the interpreter's exit)
        totals = [_total(d) for d in dumps[1 : 1 + len(PHASES)]]
    if len(totals) != len(PHASES):
        sys.exit(f"capture_instructions: expected {len(PHASES)} phase dumps, got {len(totals)}")
    per = {name: t / args.calls for name, t in zip(PHASES, totals, strict=True)}
    print(f"convnetjs-cifar, batch 1, 1 thread: instructions per call ({args.calls} calls a phase, callgrind)")
    for name in PHASES:
        print(f"  {name:<15} {per[name] / 1e6:8.3f} M")
    for what, plain, probe in (("fwd", "plain fwd", "probe fwd"), ("fwd+bwd", "plain fwd+bwd", "probe fwd+bwd")):
        extra = per[probe] - per[plain]
        print(f"  probe {what:<8} +{extra / 1e6:.3f} M over plain ({per[probe] / per[plain]:.3f}× the instructions)")


if __name__ == "__main__":
    main()
