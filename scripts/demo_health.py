"""Measure the built-in trainer's update/weight ratio and accuracies for candidate demo defaults.

    python scripts/demo_health.py --steps 1500 --lr 0.01 --weight-decay 1e-4

Prints, per layer, the median and the 10/90th percentiles of the measured ‖ΔW‖/‖W‖ after the
first 10% of the steps (the page's "about 1e-3 is healthy" line, CS231n), then the last
training accuracy (running mean of 100 batches) and validation accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from convscope.config import TrainConfig
from convscope.runs import RunReader
from convscope.train import Trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--momentum", type=float, default=TrainConfig.momentum)
    ap.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    ap.add_argument("--model", default=TrainConfig.model)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(model=args.model, steps=args.steps, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, val_every=max(1, args.steps // 5), snapshot_every=60.0,
                      evolution_checkpoints=0)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        Trainer(cfg, f"{tmp}/run").run()
        wall = time.perf_counter() - t0
        with RunReader(f"{tmp}/run") as r:
            stats = r.layer_stats()
            sc = r.scalars(["train_acc", "val_acc", "loss"])
    print(f"{args.model} lr={args.lr:g} momentum={args.momentum:g} weight_decay={args.weight_decay:g} "
          f"steps={args.steps} wall={wall:.1f}s")  # fmt: skip
    by_layer: dict[str, list[float]] = {}
    for row in stats:
        if row["step"] >= args.steps // 10 and row.get("update_ratio") is not None:
            by_layer.setdefault(row["layer"], []).append(float(row["update_ratio"]))
    for layer, vals in by_layer.items():
        p10, p50, p90 = np.percentile(vals, [10, 50, 90])
        print(f"  {layer:10s} update ratio median {p50:.1e}  (10%: {p10:.1e}, 90%: {p90:.1e})")
    print(f"  train_acc {sc['train_acc'][-1][1]:.3f}  val_acc {[round(v, 3) for _, v in sc['val_acc']]}")


if __name__ == "__main__":
    main()
