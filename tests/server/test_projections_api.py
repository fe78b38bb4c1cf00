"""Projections through the dashboard's API, in process, against a run recorded by the real Recorder:
the server queues the request, the recorder answers between two steps, the server draws it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image
from torch import Tensor, nn

from convscope.analysis.attribution import Deconvnet
from convscope.config import ServeConfig
from convscope.render import attribution
from convscope.runs import RunReader
from convscope.server import create_app
from convscope.server.pictures import snapshot_picture
from convscope.train.watch import Recorder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "http://127.0.0.1"


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 8 * 8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.relu1(self.conv1(x))).flatten(1))


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[tuple[TestClient, Recorder, Net, Tensor]]:
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(2, 3, 16, 16)
    rec = Recorder(model, tmp_path / "run", snapshot_every=0.0, poll_every=0.0)
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    rec.step(loss=1.0)
    app = create_app(tmp_path, ServeConfig())
    with TestClient(app, base_url=BASE, headers={"Origin": BASE}) as client:
        yield client, rec, model, x
    rec.close()


def _answer(rec: Recorder, model: Net, x: Tensor) -> None:
    """The user's loop takes one more step: the recorder answers pending requests after it."""
    model(x).sum().backward()
    rec.step(loss=1.0)


def test_click_to_projection_round_trip(live: Any) -> None:
    client, rec, model, x = live
    cells = client.get("/api/runs/run/cells", params={"layer": "conv1", "kind": "a"})
    assert cells.status_code == 200
    body = cells.json()
    with RunReader(rec.writer.path) as r:
        _, a = r.snapshot("conv1", "a")  # type: ignore[misc]
    pic = snapshot_picture(a, "a", norm="map")
    assert body == {"step": 0, "width": pic.width, "height": pic.height, "cells": [list(c) for c in pic.cells]}
    assert len(body["cells"]) == 6

    sent = client.post("/api/runs/run/projections", json={"layer": "conv1", "channel": 4, "step": 0})
    assert sent.status_code == 200
    ident = sent.json()["id"]
    pending = client.get(f"/api/runs/run/projections/{ident}").json()
    assert pending["status"] == "pending" and pending["units"] == []
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    _answer(rec, model, x)
    done = client.get(f"/api/runs/run/projections/{ident}").json()
    assert done["status"] == "done" and done["error"] is None
    assert done["layer"] == "conv1" and done["tensor"] == "a of block conv1 (after relu1)"
    assert done["input_step"] == 0 and done["step"] == 1 and done["asked"] == 1
    assert [u["channel"] for u in done["units"]] == [4]
    assert done["rules"] == {"deconvnet": {"relu": "max(g,0)"}, "guided": {"relu": "[z>0]·max(g,0)"}}

    twin = Net()
    twin.load_state_dict(weights)  # the weights the answer used (the step's update came before)
    expected = Deconvnet(twin).attribute(x[:1], layer="conv1", channel=4, position="max")
    png = client.get(f"/api/runs/run/projections/{ident}/4/deconvnet.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    want = attribution(expected.as_subclass(Tensor), style="rgb").array
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2  # float16 storage
    for kind in ("a", "guided"):
        r = client.get(f"/api/runs/run/projections/{ident}/4/{kind}.png")
        assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_top_nine_is_every_map_of_a_small_layer(live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, rec, model, x = live
    # all six maps, however loaded the machine: the 2 s budget per request would stop early
    import functools

    from convscope.train import answers  # where the recorder answers controls

    monkeypatch.setattr(answers, "answer_projection", functools.partial(answers.answer_projection, budget_s=600.0))
    ident = client.post("/api/runs/run/projections", json={"layer": "conv1", "channel": None}).json()["id"]
    _answer(rec, model, x)
    done = client.get(f"/api/runs/run/projections/{ident}").json()
    assert done["status"] == "done" and sorted(u["channel"] for u in done["units"]) == list(range(6))
    values = [u["value"] for u in done["units"]]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"layer": "conv9"}, 400, "unknown layer 'conv9'; this run's layers: conv1, fc"),
        ({"layer": "conv1", "channel": -1}, 400, "channel must be an integer in 0..65535 or null"),
        ({"layer": "conv1", "channel": 10**400}, 400, "channel must be an integer in 0..65535 or null"),
        ({"layer": "conv1", "channel": True}, 400, "channel must be an integer in 0..65535 or null"),
        ({"layer": "conv1", "step": 2**64}, 400, "step must be an integer in 0..9223372036854775807 or null"),
    ],
)
def test_bad_requests(live: Any, body: dict[str, Any], status: int, error: str) -> None:
    client, *_ = live
    r = client.post("/api/runs/run/projections", json=body)
    assert (r.status_code, r.json()) == (status, {"error": error})


def test_refusals_from_the_trainer_and_unknown_ids(live: Any) -> None:
    client, rec, model, x = live
    ident = client.post("/api/runs/run/projections", json={"layer": "conv1", "channel": 7}).json()["id"]
    _answer(rec, model, x)
    failed = client.get(f"/api/runs/run/projections/{ident}").json()
    assert failed["status"] == "failed"
    assert failed["error"] == "project: channel 7 is out of range for layer 'conv1': 0..5"
    assert client.get("/api/runs/run/projections/999").status_code == 404
    assert client.get(f"/api/runs/run/projections/{ident}/0/weights.png").status_code == 400
    assert client.get(f"/api/runs/run/projections/{ident}/0/guided.png").status_code == 404


def test_a_finished_watch_run_has_no_one_to_answer(live: Any) -> None:
    client, rec, *_ = live
    rec.close()
    r = client.post("/api/runs/run/projections", json={"layer": "conv1", "channel": 0})
    assert r.status_code == 409
    assert r.json()["error"] == (
        "the run is finished and was recorded by watch() in your own loop: its model is not in the run,"
        " so only your running loop can answer"
    )


def test_unit_explorer_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Net()
    probe = torch.rand(24, 3, 16, 16)
    rec = Recorder(model, tmp_path / "run", snapshot_every=0.0, poll_every=0.0, probe=probe)
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()
    rec.step(loss=1.0)
    with TestClient(create_app(tmp_path, ServeConfig()), base_url=BASE, headers={"Origin": BASE}) as client:
        ident = client.post("/api/runs/run/units", json={"layer": "conv1", "channel": 2}).json()["id"]
        assert client.get(f"/api/runs/run/units/{ident}").json()["status"] == "pending"
        _answer(rec, model, x)
        done = client.get(f"/api/runs/run/units/{ident}").json()
        assert done["status"] == "done" and done["layer"] == "conv1" and done["channel"] == 2
        assert len(done["hits"]) == 9 and done["probe_images"] == 24
        assert done["evolution_steps"] == []  # and the page is told why
        assert done["evolution_note"] == "no evolution strip: the run keeps no evo-* checkpoints"
        for kind in ("patches", "projections", "filter", "stimulus"):
            r = client.get(f"/api/runs/run/units/{ident}/{kind}.png")
            assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n", kind
        missing = client.post("/api/runs/run/units", json={"layer": "conv1"})
        assert (missing.status_code, missing.json()) == (400, {"error": "channel must be an integer in 0..65535"})
        assert client.get("/api/runs/run/units/999").status_code == 404
    rec.close()
