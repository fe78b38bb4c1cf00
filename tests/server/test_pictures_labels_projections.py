"""The projection answer says which tensor its values are of: "a" for a block with an activation,
"z" for one without (the fc layer's class scores, which may be negative), and for the output layer
each unit's class name from the run's meta. The page writes "z = -13.59 (rocket)", never
"max a = -13.59"."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from torch import Tensor, nn

from convscope.config import ServeConfig
from convscope.server import create_app
from convscope.train import answers
from convscope.train.watch import Recorder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "http://127.0.0.1"
CLASSES = ["cat", "dog", "ship"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.relu1(self.conv1(x))).flatten(1))


def _client(tmp_path: Path, meta: dict[str, Any] | None) -> Iterator[tuple[TestClient, Recorder, Net, Tensor]]:
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(2, 3, 16, 16)
    rec = Recorder(model, tmp_path / "run", snapshot_every=0.0, poll_every=0.0, meta=meta)
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    rec.step(loss=1.0)
    with TestClient(create_app(tmp_path, ServeConfig()), base_url=BASE, headers={"Origin": BASE}) as client:
        yield client, rec, model, x
    rec.close()


@pytest.fixture()
def named(tmp_path: Path) -> Iterator[tuple[TestClient, Recorder, Net, Tensor]]:
    yield from _client(tmp_path, {"classes": CLASSES})


@pytest.fixture()
def unnamed(tmp_path: Path) -> Iterator[tuple[TestClient, Recorder, Net, Tensor]]:
    yield from _client(tmp_path, None)


def _project(live: Any, monkeypatch: pytest.MonkeyPatch, layer: str) -> dict[str, Any]:
    client, rec, model, x = live
    monkeypatch.setattr(answers, "answer_projection", functools.partial(answers.answer_projection, budget_s=600.0))
    ident = client.post("/api/runs/run/projections", json={"layer": layer, "channel": None}).json()["id"]
    with torch.no_grad():
        scores = model(x[:1])[0].tolist()  # (3,) the class scores z before the step
    model(x).sum().backward()
    rec.step(loss=1.0)
    done: dict[str, Any] = client.get(f"/api/runs/run/projections/{ident}").json()
    done["_scores"] = scores
    return done


def test_fc_units_are_class_scores_z_with_class_names(named: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    done = _project(named, monkeypatch, "fc")
    assert done["status"] == "done"
    assert done["tensor"] == "z of block fc (no activation follows)" and done["symbol"] == "z"
    order = sorted(range(3), key=lambda k: -done["_scores"][k])
    assert [u["channel"] for u in done["units"]] == order
    assert [u["name"] for u in done["units"]] == [CLASSES[k] for k in order]
    assert [u["position"] for u in done["units"]] == [None, None, None]


def test_conv_units_are_a_without_names(named: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    done = _project(named, monkeypatch, "conv1")
    assert done["symbol"] == "a" and done["tensor"] == "a of block conv1 (after relu1)"
    assert sorted(u["channel"] for u in done["units"]) == [0, 1, 2, 3]
    assert {u["name"] for u in done["units"]} == {None}


def test_no_class_names_without_classes_in_meta(unnamed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    done = _project(unnamed, monkeypatch, "fc")
    assert done["symbol"] == "z"
    assert {u["name"] for u in done["units"]} == {None}


def test_pending_answer_has_the_new_fields(named: Any) -> None:
    client, *_ = named
    ident = client.post("/api/runs/run/projections", json={"layer": "fc"}).json()["id"]
    pending = client.get(f"/api/runs/run/projections/{ident}").json()
    assert pending["status"] == "pending" and pending["symbol"] is None and pending["units"] == []
