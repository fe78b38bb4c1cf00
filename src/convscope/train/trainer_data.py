"""The built-in trainer's data: training, validation and test tensors for one input shape
(built-in photo crops or digits, or a dataset folder or file), and a run's training config read
back from its store (train/loop.py trains on it; the projections worker and `convscope
evolution` rebuild the same validation split from it)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from convscope.config import TrainConfig
from convscope.data import PHOTO_CLASSES, digits, open_dataset, photo_crops


def train_config_of(config: dict[str, Any]) -> TrainConfig:
    """A run's TrainConfig read back from its stored config (keys of another version left out)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**{k: v for k, v in config.items() if k in known})
    except (TypeError, ValueError) as err:
        raise ValueError(f"the run's training config cannot be read back: {err}") from None


class Data:
    """Val / test tensors in [0, 1] for one input shape, with class names; the training set is kept
    normalised (`xtr_normed`, channels-last): a batch is then one index and a flip of about half
    of it, 0.29 -> 0.10 ms at batch 32 (flip and the per-channel normalisation commute)."""

    def __init__(self, config: TrainConfig, input_shape: tuple[int, int, int]) -> None:
        c, h, w = input_shape
        per_example = c * h * w * 4
        n_train = max(1, min(config.train_size, config.max_data_bytes // per_example))
        self.note = (
            f"training set cut to {n_train:,} examples to fit {config.max_data_bytes >> 20} MiB"
            if n_train < config.train_size
            else ""
        )
        n_test = max(config.test_images, 1)
        spec = config.data
        if spec == "builtin:photo-crops":
            if c != 3:
                raise ValueError("builtin:photo-crops is colour: pick a 3-channel model or builtin:digits")
            xtr, self.ytr = photo_crops("train", n_train, size=h, seed=config.seed)
            self.xval, self.yval = photo_crops("val", config.val_size, size=h, seed=config.seed + 1)
            self.xtest, self.ytest = photo_crops("test", n_test, size=h, seed=config.seed + 2)
            self.classes = list(PHOTO_CLASSES)
        elif spec == "builtin:digits":
            if c != 1 or h != w:
                raise ValueError("builtin:digits is 1-channel square: pick e.g. zoo:convnetjs-mnist")
            xtr, self.ytr = digits("train", size=h)
            self.xval, self.yval = digits("val", size=h)
            self.xtest, self.ytest = digits("test", size=h)
            xtr, self.ytr = xtr[:n_train], self.ytr[:n_train]
            self.classes = [str(i) for i in range(10)]
        else:
            ds = open_dataset(spec, size=(h, w), channels=c)
            n = len(ds)  # type: ignore[arg-type]
            if n < 3:
                raise ValueError(f"dataset {spec} has {n} examples: too few to train on")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed)).tolist()
            n_val = min(config.val_size, max(1, n // 10))
            n_te = min(n_test, max(1, n // 10))

            def pick(ids: list[int]) -> tuple[Tensor, Tensor]:
                return torch.stack([ds[i][0] for i in ids]), torch.tensor([int(ds[i][1]) for i in ids])

            self.xval, self.yval = pick(order[:n_val])
            self.xtest, self.ytest = pick(order[n_val : n_val + n_te])
            xtr, self.ytr = pick(order[n_val + n_te :][:n_train])
            classes = getattr(ds, "classes", None)
            k = int(self.ytr.max()) + 1
            self.classes = list(classes) if classes else [f"class {i}" for i in range(k)]
        self.xtest, self.ytest = self.xtest[: config.test_images], self.ytest[: config.test_images]
        self.mean = xtr.mean(dim=(0, 2, 3))  # (C,)
        self.std = xtr.std(dim=(0, 2, 3)).clamp_min(1e-3)
        # batches index it, channels-last as the weights (Trainer._build); no raw copy is kept
        self.xtr_normed = self.norm(xtr).contiguous(memory_format=torch.channels_last)

    def norm(self, x: Tensor) -> Tensor:
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
