"""Train the demo net's shipped weights: zoo:convnetjs-cifar on the built-in photo-crops set.

    .venv/bin/python scripts/train_default.py            # a few minutes on one CPU thread
    .venv/bin/python scripts/train_default.py --epochs 1 --out /tmp/w.safetensors

The recipe (6 epochs of 30000 crops, lr 0.01, weight decay 2e-3, flips) and the training code
live in scripts/train_zoo.py (``train_zoo.py convnetjs-cifar`` does the same); this script
is that with the net fixed. Deterministic for a seed and thread count. Writes
src/convscope/models/weights/convnetjs-cifar.safetensors with metadata: model, classes,
input_shape, mean, std, test accuracy, and how it was trained.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_zoo beside this file

from train_zoo import main

if __name__ == "__main__":
    main(sys.argv[1:], prog="scripts/train_default.py", name="convnetjs-cifar", description=__doc__)
