"""Runs for the dashboard tests, written with RunWriter exactly as docs/run-store.md says the
trainers write them (importable as `server.fakerun`: pytest puts tests/ on sys.path).

  write_fixture_run(root)   a finished 3-step run with hand-set values (API tests: full JSON)
  FakeTrainer(root / name)  a thread that keeps committing steps with changing tensors, polls
                            the controls and acknowledges them: pause stops its steps, lr is
                            logged as the scalar `lr`, predict answers with top-3 and maps
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from convscope.config import CONTROL_RANGES, ServeConfig
from convscope.runs import RunWriter
from convscope.server import DashboardServer

CLASSES = ["cat", "dog", "car"]
INPUT_SHAPE = [3, 8, 8]
LAYERS: list[dict[str, Any]] = [
    {"name": "conv1", "kind": "conv", "type": "Conv2d", "out_shape": [4, 8, 8], "kernel": [3, 3],
     "stride": [1, 1], "padding": [1, 1], "params": 112, "formula": "4 × (3 × 3 × 3) + 4",
     "activation": "ReLU", "norm": None},
    {"name": "fc", "kind": "linear", "type": "Linear", "out_shape": [3], "kernel": None,
     "stride": None, "padding": None, "params": 771, "formula": "3 × 256 + 3",
     "activation": None, "norm": None},
]  # fmt: skip
META = {
    "model": "zoo:fixture-net",
    "trainer": "builtin",
    "classes": CLASSES,
    "input_shape": INPUT_SHAPE,
    "zoo": ["fixture-net", "other-net"],
    "spec": "conv 4 3x3 relu\nfc 3",
    "status": "running",
}
CONFIG = {"lr": 0.125, "momentum": 0.5, "batch_size": 4, "weight_decay": 0.0}


def z_of(step: int) -> torch.Tensor:
    """conv1's z at `step`: (1, 4, 8, 8), exact in float16, with negatives (ReLU kills them)."""
    v = torch.arange(4 * 8 * 8, dtype=torch.float32).reshape(1, 4, 8, 8)
    return (v - 100.0 + 16.0 * step) / 8.0


def weight_of(step: int) -> torch.Tensor:
    """conv1's filters W at `step`: (4, 3, 3, 3), exact in float16, signed."""
    v = torch.arange(4 * 3 * 3 * 3, dtype=torch.float32).reshape(4, 3, 3, 3)
    return (v - 50.0) / 64.0 * (1.0 + step)


def scalars_of(step: int) -> dict[str, float]:
    return {
        "loss": 2.0 - 0.5 * step, "wd_loss": 0.0625, "train_acc": 0.25 * step,
        "examples": 4.0 * (step + 1), "fwd_ms_per_example": 0.5, "bwd_ms_per_example": 1.0,
        "examples_per_s": 1000.0, "lr": 0.125, "momentum": 0.5, "batch_size": 4.0,
        "weight_decay": 0.0,
    }  # fmt: skip


def stats_of(step: int, layer: str) -> dict[str, float]:
    base = 1.0 if layer == "conv1" else 2.0
    return {"a_min": 0.0, "a_max": base + step, "a_mean": base / 2, "dead_fraction": 0.25,
            "grad_a_norm": 0.5, "grad_weight_norm": 0.25, "update_ratio": 0.001 * base}  # fmt: skip


def sample_images() -> torch.Tensor:
    """(2, 3, 8, 8) in [0, 1]: a red-ish ramp and its mirror."""
    ramp = torch.linspace(0, 1, 8).repeat(8, 1)  # (8, 8)
    one = torch.stack([ramp, ramp.T, torch.full((8, 8), 0.5)])
    return torch.stack([one, one.flip(-1)])


PREDICTIONS = [
    {"index": 0, "label": 0, "label_name": "cat", "top": [[0, "cat", 0.75], [1, "dog", 0.125], [2, "car", 0.125]], "correct": True},
    {"index": 1, "label": 2, "label_name": "car", "top": [[1, "dog", 0.5], [2, "car", 0.25], [0, "cat", 0.25]], "correct": False},
]  # fmt: skip
FINDINGS = [{"layer": "conv1", "kind": "dead", "filters": [3], "severity": "medium",
             "message": "1 of 4 filters dead", "advice": "the learning rate may be too high", "step": 2}]


def write_fixture_run(root: Path, name: str = "fix", *, trainer: str = "builtin") -> Path:
    """A finished 3-step run (steps 0, 1, 2) with snapshots at steps 0 and 2."""
    w = fixture_writer(root, name, trainer=trainer)
    w.close(status="finished")
    return w.path


def fixture_writer(root: Path, name: str = "fix", *, trainer: str = "builtin") -> RunWriter:
    """The same 3 steps, with the writer left open and status "running" (a live run whose
    trainer sleeps): the caller closes it."""
    w = RunWriter(root / name, config=CONFIG, meta={**META, "trainer": trainer})
    w.log_json(0, "layers", LAYERS)
    w.log_snapshot(0, "_test", "input", sample_images())
    for step in range(3):
        w.log_scalars(step, scalars_of(step))
        if step == 2:
            w.log_scalars(step, {"val_acc": 0.5})
        for layer in ("conv1", "fc"):
            w.log_layer_stats(step, layer, stats_of(step, layer))
        if step in (0, 2):
            z = z_of(step)
            w.log_snapshot(step, "conv1", "x", sample_images()[:1])
            w.log_snapshot(step, "conv1", "z", z)
            w.log_snapshot(step, "conv1", "a", z.clamp_min(0))
            w.log_snapshot(step, "conv1", "grad_a", z / 64.0)
            w.log_snapshot(step, "conv1", "grad_z", (z > 0).float() * z / 64.0)
            w.log_snapshot(step, "conv1", "weight", weight_of(step))
            w.log_snapshot(step, "conv1", "grad_weight", weight_of(step) / 16.0)
            fz = torch.tensor([[-1.0, 0.5, 2.0]]) * (step + 1)  # (1, 3)
            w.log_snapshot(step, "fc", "z", fz)
            w.log_snapshot(step, "fc", "a", fz)
            w.log_snapshot(step, "fc", "weight", torch.linspace(-1, 1, 3 * 256).reshape(3, 256))
        if step == 2:
            w.log_json(step, "predictions", PREDICTIONS)
            w.log_json(step, "findings", FINDINGS)
        w.commit(step)
    return w


class FakeTrainer:
    """A stand-in for the built-in trainer in a thread (see the module docstring).

    Each step: scalars (loss falls, `lr` is the current learning rate), layer stats, and
    snapshots of conv1 (x, z, a, grad_a, grad_z, W, dL/dW) and fc that change every step,
    then commit; then it polls controls and acknowledges each one."""

    def __init__(self, path: Path, *, step_s: float = 0.05, snapshot_every: int = 1) -> None:
        self.path = path
        self.step_s = step_s
        self.snapshot_every = snapshot_every
        self.writer = RunWriter(path, config=CONFIG, meta=META)
        self.step = 0
        self.lr = CONFIG["lr"]
        self._lr_logged: float | None = None
        self.paused = False
        self.acked: list[tuple[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-trainer", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> FakeTrainer:
        self.writer.log_json(0, "layers", LAYERS)
        self.writer.log_snapshot(0, "_test", "input", sample_images())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.writer.close(status="stopped")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.paused:
                    self._write_step(self.step)
                    self.step += 1
                else:
                    self.writer.set_meta("status", "paused")
                    self.writer.commit(max(self.step - 1, 0))
                self._controls()
                time.sleep(self.step_s)
        except BaseException as err:  # the test reads it
            self.error = err
            raise

    def _write_step(self, step: int) -> None:
        w = self.writer
        g = torch.Generator().manual_seed(step)
        scalars = {**scalars_of(step), "loss": 2.0 / (1 + step), "lr": self.lr,
                   "train_acc": step / (step + 4.0), "examples": 4.0 * (step + 1)}  # fmt: skip
        if self.lr == self._lr_logged:  # the settings, as the built-in trainer logs them: when they change
            scalars = {k: v for k, v in scalars.items() if k not in CONTROL_RANGES}
        w.log_scalars(step, scalars)
        self._lr_logged = self.lr
        if step % 5 == 0:
            w.log_scalars(step, {"val_acc": min(1.0, 0.05 * step)})
            w.log_json(step, "predictions", PREDICTIONS)
        for layer in ("conv1", "fc"):
            w.log_layer_stats(
                step, layer, {**stats_of(step, layer), "update_ratio": 1e-3 / (1 + step)}
            )
        if step % self.snapshot_every == 0:
            z = torch.randn(1, 4, 8, 8, generator=g)
            weight = torch.randn(4, 3, 3, 3, generator=g)
            w.log_snapshot(step, "conv1", "x", sample_images()[:1])
            w.log_snapshot(step, "conv1", "z", z)
            w.log_snapshot(step, "conv1", "a", z.clamp_min(0))
            w.log_snapshot(step, "conv1", "grad_a", z * 0.01)
            w.log_snapshot(step, "conv1", "grad_z", (z > 0).float() * z * 0.01)
            w.log_snapshot(step, "conv1", "weight", weight)
            w.log_snapshot(step, "conv1", "grad_weight", weight * 0.01)
            fz = torch.randn(1, 3, generator=g)
            w.log_snapshot(step, "fc", "z", fz)
            w.log_snapshot(step, "fc", "a", fz)
            w.log_snapshot(step, "fc", "weight", torch.randn(3, 256, generator=g))
            w.log_snapshot(step, "fc", "grad_weight", torch.randn(3, 256, generator=g) * 0.01)
        w.set_meta("status", "running")
        w.commit(step)

    def _controls(self) -> None:
        w = self.writer
        for c in w.poll_controls():
            result: dict[str, Any] = {"ok": True}
            if c.key == "pause":
                self.paused = True
            elif c.key == "resume":
                self.paused = False
            elif c.key == "lr":
                self.lr = float(c.value)
                result["lr"] = self.lr
            elif c.key == "predict":
                result.update(self._predict(c.id, c.value))
            self.acked.append((c.key, c.value))
            w.ack_control(c.id, max(self.step - 1, 0), result=result)

    def _predict(self, ident: int, value: dict[str, Any]) -> dict[str, Any]:
        raw = base64.b64decode(value["png_b64"])
        x = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float32) / 255
        t = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]  # (1, 3, H, W)
        z = t[:, :1].repeat(1, 4, 1, 1) - 0.5  # (1, 4, H, W)
        step = max(self.step - 1, 0)
        w = self.writer
        w.log_snapshot(step, f"upload:{ident}/conv1", "z", z)
        w.log_snapshot(step, f"upload:{ident}/conv1", "a", z.clamp_min(0))
        w.log_snapshot(step, f"upload:{ident}/fc", "z", torch.tensor([[0.25, -1.0, 2.0]]))
        w.log_snapshot(step, f"upload:{ident}/fc", "a", torch.tensor([[0.25, -1.0, 2.0]]))
        result = {
            "top": [[2, "car", 0.625], [0, "cat", 0.25], [1, "dog", 0.125]],
            "layers": ["conv1", "fc"],
        }
        w.log_json(step, f"upload:{ident}", result)
        w.commit(step)
        return {}


class ThreadedTrainer:
    """A built-in `Trainer` run in a thread, with FakeTrainer's start() / stop() / error, for
    `dashboard_over` (the browser tests that train the real net)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.trainer.run()
        except BaseException as exc:  # reported by dashboard_over's teardown
            self.error = exc

    def start(self) -> ThreadedTrainer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.trainer.stop()
        self._thread.join(timeout=30)


@contextmanager
def dashboard_over(root: Path, trainer: Any) -> Iterator[DashboardServer]:
    """A DashboardServer over `root` (any free port, polling every 0.2 s) while `trainer` (started:
    a FakeTrainer, or the browser tests' own) writes a run there; both stopped after, and the
    trainer must not have failed."""
    server = DashboardServer(root, ServeConfig(port=0, poll_s=0.2)).start()
    try:
        yield server
    finally:
        server.stop()
        trainer.stop()
    assert trainer.error is None
