"""What the recorder keeps over many long steps: resnet18-shaped at batch 8 on one thread (~1 s a
step), watched with watch()'s defaults for N steps of bench/watch.py's loop. Prints one letter per
step (S: the whole statistics or a snapshot's, D: the same with a live-diagnosis sample, M: the
maps' statistics only, .: none), the run's
tallies and the steps with snapshots. docs/speed.md ("the maps' statistics first") quotes it.

    .venv/bin/python bench/long_steps.py --steps 300       # ~5.5 min
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import watch as W  # bench/watch.py: the loop and its data

from convscope.runs import RunReader


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, y = W.load_data(4 * args.batch, W.BIG)
    loop = W.Loop(args.batch, x, y, net=W.BIG)
    work = Path(tempfile.mkdtemp(prefix="long-steps-"))
    loop.open(work / "run", W.Away())
    rec = loop.recorder
    assert rec is not None
    letters = []
    for _ in range(args.steps):
        planned = rec._plan  # what this step records (armed at the end of the last)
        sampled = rec.budget.total.diagnosis_samples
        loop.watched_step()
        diagnosis = rec.budget.total.diagnosis_samples > sampled
        letters.append({"plain": ".", "maps": "M"}.get(planned, "D" if diagnosis else "S"))
    total = rec.budget.report(reset_window=False)["total"]
    loop.close()
    print("".join(letters))
    print(total)
    with RunReader(work / "run") as r:
        first = r.json("layers")[1][0]["name"]  # type: ignore[index]
        print("snapshot steps", r.snapshot_steps(first, "a"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
