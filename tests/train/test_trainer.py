"""The built-in trainer: controls arrive through the store and take effect; a kill -9 loses no
committed step."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.capture import count_hooks
from convscope.config import TrainConfig
from convscope.runs import RunReader
from convscope.train import Trainer

SMALL = dict(train_size=256, val_size=64, test_images=4, batch_size=16, val_every=5, snapshot_every=0.0)


def _answer(reader: RunReader, key: str) -> dict:  # type: ignore[type-arg]
    rows = [c for c in reader.controls() if c["key"] == key]
    assert rows, f"no control {key}"
    return rows[-1]


def test_controls_reach_the_trainer(tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(**SMALL), tmp_path / "run")
    reader = RunReader(tmp_path / "run")
    trainer.recorder.poll_every = 0.0
    trainer.train_step()
    ids = {k: reader.send_control(k, v) for k, v in
           [("lr", 0.05), ("momentum", 0.5), ("batch_size", 8), ("weight_decay", 0.001), ("lr", -1)]}  # fmt: skip
    trainer.train_step()  # step 1 polls after its commit
    trainer.train_step()  # step 2 runs with the new settings
    assert trainer.opt.param_groups[0]["lr"] == 0.05 and trainer.opt.param_groups[0]["momentum"] == 0.5
    sc = reader.scalars()
    assert dict(sc["lr"])[2] == 0.05 and dict(sc["batch_size"])[2] == 8.0
    assert dict(sc["weight_decay"])[2] == 0.001
    assert dict(sc["examples"])[2] - dict(sc["examples"])[1] == 8.0  # the new batch size
    bad = [c for c in reader.controls() if c["id"] == ids["lr"]]
    assert bad and bad[0]["result"]["ok"] is False and "out of range" in bad[0]["result"]["error"]

    # checkpoint round trip
    reader.send_control("save_checkpoint", "mine")
    trainer.train_step()
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step()
    reader.send_control("load_checkpoint", "mine")
    trainer.train_step()
    step = _answer(reader, "save_checkpoint")["result"]["step"]
    assert isinstance(step, int)  # a load says which step's weights it loaded
    assert _answer(reader, "load_checkpoint")["result"] == {"ok": True, "name": "mine", "step": step}

    # an uploaded image: predictions and maps come back
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buf, format="PNG")
    pid = reader.send_control("predict", {"png_b64": base64.b64encode(buf.getvalue()).decode()})
    trainer.train_step()
    got = reader.json(f"upload:{pid}")
    assert got is not None and len(got[1]["top"]) == 3
    assert abs(sum(p for _, _, p in got[1]["top"]) - 1.0) < 1.0  # probabilities, at most 1 in total
    assert reader.snapshot(f"upload:{pid}/conv1", "a") is not None

    # restart with an edited layer spec
    reader.send_control("model", "conv 4 3 pad 1 relu\npool 2\nfc 10")
    trainer.train_step()
    trainer.train_step()
    assert [row["name"] for row in reader.json("layers")[1]] == ["conv1", "fc1"]
    assert sum(p.numel() for p in trainer.model.parameters()) == 4 * 3 * 9 + 4 + 4 * 16 * 16 * 10 + 10
    old_model_hooks = count_hooks(trainer.model)
    trainer.recorder.close("stopped")
    assert count_hooks(trainer.model) == 0 and old_model_hooks > 0
    assert reader.meta()["status"] == "stopped"
    assert saved  # the checkpoint was taken from a live model


def test_the_settings_are_logged_on_a_nets_first_step_and_when_they_change(tmp_path: Path) -> None:
    """lr, momentum, batch size and weight decay stay constant between controls: the store has them at
    the run's first step, at each step where one changed, and at a new net's first step (the page
    reads a net's own span), not on every step; the other scalars come every step."""
    trainer = Trainer(TrainConfig(**SMALL), tmp_path / "run")  # type: ignore[arg-type]
    reader = RunReader(tmp_path / "run")
    trainer.recorder.poll_every = 0.0
    for _ in range(2):
        trainer.train_step()
    reader.send_control("lr", 0.05)
    trainer.train_step()  # step 2 polls after its commit: step 3 runs with lr 0.05
    trainer.train_step()
    trainer.train_step()
    reader.send_control("lr", 0.05)  # the same value again: nothing changed, nothing logged
    trainer.train_step()  # step 5 (it applies it)
    reader.send_control("model", "zoo:tiny-vgg")
    trainer.train_step()  # step 6 restarts with the new net: step 7 is its first
    trainer.train_step()
    trainer.train_step()
    trainer.recorder.writer.flush()
    sc = reader.scalars()
    c = TrainConfig()
    first = {"lr": c.lr, "momentum": c.momentum, "batch_size": 16.0, "weight_decay": c.weight_decay}
    assert {k: sc[k] for k in first} == {
        k: [(0, v), (3, 0.05 if k == "lr" else v), (7, 0.05 if k == "lr" else v)] for k, v in first.items()
    }
    assert [s for s, _ in sc["loss"]] == list(range(9)) and [s for s, _ in sc["train_acc"]] == list(range(9))
    assert _answer(reader, "model")["applied_step"] == 7 and trainer.model_spec == "zoo:tiny-vgg"
    trainer.recorder.close()


def test_kill_minus_9_keeps_every_committed_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convscope", "train", "--run", str(run), "--train-size", "512"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (run / "run.sqlite").exists() and (RunReader(run).last_step() or 0) >= 8:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.2)
        else:
            pytest.fail("the trainer did not reach step 8 in 120 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    r = RunReader(run)
    last = r.last_step()
    assert last is not None and last >= 8
    loss_steps = [s for s, _ in r.scalars(names=["loss"])["loss"]]
    assert loss_steps == list(range(last + 1))  # every committed step, nothing after
    stats_steps = sorted({row["step"] for row in r.layer_stats(layer="conv1")})
    assert stats_steps[0] == 0 and set(stats_steps) <= set(loss_steps)  # as often as the budget allows
    step, a = r.snapshot("conv1", "a")
    assert step <= last and torch.isfinite(a).all()
    assert r.meta()["status"] == "running"  # it never said otherwise: it was killed
