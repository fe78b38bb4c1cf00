"""Checkpoints the built-in trainer writes describe themselves: model, input shape, normalisation,
class names and step are in the safetensors metadata, and `inspect`'s loader reads them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from convscope.config import TrainConfig
from convscope.inspect import open_model
from convscope.train import Trainer

SMALL = dict(train_size=64, val_size=16, test_images=2, batch_size=16, val_every=50, snapshot_every=0.0)


def test_last_checkpoint_describes_itself(tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(steps=2, **SMALL), tmp_path / "run")
    trainer.run()
    path = tmp_path / "run" / "checkpoints" / "last.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["model"] == "zoo:convnetjs-cifar" and meta["step"] == "1" and meta["convscope_step"] == "1"
    assert json.loads(meta["input_shape"]) == [3, 32, 32]
    assert json.loads(meta["classes"]) == trainer.data.classes
    mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
    assert mean == pytest.approx(trainer.data.mean.tolist(), abs=1e-5)
    assert std == pytest.approx(trainer.data.std.tolist(), abs=1e-5)
    loaded = open_model("zoo:convnetjs-cifar", weights=str(path))
    assert loaded.classes == trainer.data.classes and loaded.mean == mean and loaded.std == std
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, trainer.model.state_dict()[k]), k
