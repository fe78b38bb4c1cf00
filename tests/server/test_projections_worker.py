"""Projections of a run whose trainer has ended: the server starts a worker process (`convscope
answer`) that answers from the run's newest checkpoint, leaves the run's status as it was, and
exits when idle. The server itself never builds the model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from torch import Tensor

from convscope.analysis.attribution import Deconvnet
from convscope.config import ServeConfig, TrainConfig
from convscope.models import get_entry
from convscope.runs import RunReader
from convscope.server import create_app
from convscope.train import Trainer, watch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "http://127.0.0.1"
SMALL = dict(train_size=128, val_size=32, test_images=2, batch_size=16, val_every=50, snapshot_every=0.0)


def _poll(client: TestClient, path: str, timeout_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(path).json()
        if body["status"] != "pending":
            return body
        time.sleep(0.2)
    raise AssertionError(f"no answer at {path} after {timeout_s} s")


def test_finished_run_is_answered_by_a_worker_from_its_checkpoint(tmp_path: Path) -> None:
    Trainer(TrainConfig(steps=3, **SMALL), tmp_path / "done").run()
    with RunReader(tmp_path / "done") as r:
        assert r.meta()["status"] == "finished"
        names = [c["name"] for c in r.checkpoints()]
        assert "last" in names  # saved when the run ended (beside any evolution checkpoints)
        newest = max((c for c in r.checkpoints()), key=lambda c: (c["step"], c["time"]))
        assert newest["name"] == "last"
        _, x = r.snapshot("conv1", "x")  # type: ignore[misc]
    app = create_app(tmp_path, ServeConfig())
    app.state.dash.workers.idle_s = 2
    with TestClient(app, base_url=BASE, headers={"Origin": BASE}) as client:
        sent = client.post("/api/runs/done/projections", json={"layer": "conv2", "channel": 3})
        assert sent.status_code == 200
        done = _poll(client, f"/api/runs/done/projections/{sent.json()['id']}")
        assert done["status"] == "done", done
        assert done["weights"] == "checkpoint last (step 2)" and done["input_step"] == 2
        model = get_entry("convnetjs-cifar").factory()
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(tmp_path / "done" / "checkpoints" / "last.safetensors")))
        expected = Deconvnet(model).attribute(x.float(), layer="conv2", channel=3, position="max")
        with RunReader(tmp_path / "done") as r:
            _, stored = r.snapshot(f"project:{sent.json()['id']}/3", "deconvnet")  # type: ignore[misc]
        torch.testing.assert_close(stored.float(), expected.as_subclass(Tensor), atol=1e-4, rtol=1e-2)
        workers = app.state.dash.workers
        deadline = time.monotonic() + 30
        while workers.alive("done") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not workers.alive("done")  # idle: it ended by itself
    with RunReader(tmp_path / "done") as r:
        assert r.meta()["status"] == "finished"  # the worker put the status back


def test_runs_a_worker_cannot_answer(tmp_path: Path) -> None:
    model = get_entry("convnetjs-cifar").factory()
    with watch(model, tmp_path / "mine") as run:
        model(torch.rand(2, 3, 32, 32)).sum().backward()
        run.step(loss=1.0)
    app = create_app(tmp_path, ServeConfig())
    with TestClient(app, base_url=BASE, headers={"Origin": BASE}) as client:
        r = client.post("/api/runs/mine/projections", json={"layer": "conv1", "channel": 0})
        assert r.status_code == 409
        assert r.json()["error"].startswith("the run is finished and was recorded by watch() in your own loop")
        assert not app.state.dash.workers.alive("mine")
