"""Train the demo net's shipped weights: zoo:convnetjs-cifar on the built-in photo-crops set.

    .venv/bin/python scripts/train_default.py            # about 4 minutes on 2 idle CPU cores (8 when shared)
    .venv/bin/python scripts/train_default.py --epochs 1 --out /tmp/w.safetensors

Deterministic for a seed. Writes src/convscope/models/weights/convnetjs-cifar.safetensors with
metadata: classes, input_shape, mean, std, test accuracy, and how it was trained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from convscope.data import PHOTO_CLASSES, photo_crops
from convscope.models import WEIGHTS_DIR, ZOO, save_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=30000, help="training crops")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=2e-3)  # smoother first-layer filters
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "convnetjs-cifar.safetensors")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    entry = ZOO["convnetjs-cifar"]
    model = entry.factory()
    xtr, ytr = photo_crops("train", args.train, size=32, seed=args.seed)  # (N, 3, 32, 32) in [0, 1]
    xte, yte = photo_crops("test", 2000, size=32, seed=args.seed + 1)
    mean = xtr.mean(dim=(0, 2, 3))  # (3,)
    std = xtr.std(dim=(0, 2, 3))
    norm = lambda x: (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)  # noqa: E731
    xtr, xte = norm(xtr), norm(xte)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    steps = args.epochs * (len(xtr) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr * 5, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        total = 0.0
        for i in range(0, len(xtr) - 63, 64):
            idx = perm[i : i + 64]
            xb = xtr[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(-1)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = accuracy(model, xte, yte)
        print(f"epoch {epoch + 1}: train loss {total / len(xtr):.3f}  test accuracy {acc:.3f}  "
              f"({time.perf_counter() - start:.0f} s)")
    model.eval()
    acc = accuracy(model, xte, yte)
    meta = {
        "classes": json.dumps(list(PHOTO_CLASSES)),
        "input_shape": json.dumps(list(entry.input_shape)),
        "mean": json.dumps([round(float(v), 5) for v in mean]),
        "std": json.dumps([round(float(v), 5) for v in std]),
        "trained_on": f"builtin:photo-crops train n={args.train} seed={args.seed}",
        "test_accuracy": f"{acc:.4f}",
        "recipe": f"scripts/train_default.py --epochs {args.epochs} --train {args.train} --lr {args.lr} --weight-decay {args.weight_decay} --seed {args.seed}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, args.out, metadata=meta)
    print(f"wrote {args.out} (test accuracy {acc:.3f})")


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).float().mean())


if __name__ == "__main__":
    main()
