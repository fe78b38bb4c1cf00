"""watch() on / off on convnetjs-cifar at batch 32, one line per run: for an A/B of two checkouts,
run it from each in turn (old, new, new, old, ...) on a quiet machine and compare the lines.

    PYTHONPATH=<checkout>/src .venv/bin/python <checkout>/bench/watch_ab.py --tag old --rounds 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import watch as W  # bench/watch.py: the loop, its data and the on / off comparison


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="this checkout")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    plan = replace(W.FULL, batches=((W.NET, args.batch),), overhead_rounds=args.rounds,
                   overhead_budget_s=4.0 * args.rounds)  # fmt: skip
    x, y = W.load_data(2048)
    r = W.bench_overhead(plan, x, y, Path(tempfile.mkdtemp(prefix="watch-ab-")))[0]
    t = r["recording"]
    print(f"{args.tag}: on/off wall {r['ratio_wall']:.3f} CPU {r['ratio_cpu']:.3f} (noise {r['noise']:.0%});"
          f" statistics on {t['timed_stats_steps']} of {t['timed_steps']} timed steps;"
          f" the recorder's measured share {100 * t['cost_share']:.2f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
