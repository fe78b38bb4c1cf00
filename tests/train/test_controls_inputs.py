"""The built-in trainer's answers to malformed controls, and the checkpoint list the page gets:
a layer spec's error names the text box's line; a checkpoint that does not fit names five keys
and how many more; GET /api/runs/{run} says each checkpoint's net and whether it fits the net
training now (server/controls.py describe_checkpoints, from the safetensors metadata)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from convscope.config import ServeConfig, TrainConfig
from convscope.models.spec import SpecError
from convscope.runs import RunReader
from convscope.server import create_app
from convscope.server.controls import describe_checkpoints
from convscope.train import Trainer
from convscope.train.trainer_controls import ModelChoiceError, build_allowed

SMALL = dict(train_size=256, val_size=64, test_images=4, batch_size=16, val_every=5, snapshot_every=0.0)
BASE = "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("conv 8 3 relu\nbanana 3\nfc 10", "line 2: 'banana' is not a layer (conv, pool, fc, dropout)"),
        ("banana 3\nfc 10", "line 1: 'banana' is not a layer (conv, pool, fc, dropout)"),  # was a 5-line choice list
        ("\n\nconv ten 3 relu\nfc 10",  # the leading blank lines count, as in the text box
         "line 3: 'ten' is not a whole number (conv FILTERS SIZE [stride S] [pad P] [ACT], e.g. 'conv 16 5 pad 2 relu')"),
        ("fc", "line 1: fc needs UNITS, e.g. 'fc 10'"),
    ],
)  # fmt: skip
def test_a_malformed_spec_is_one_line_naming_its_line(spec: str, error: str) -> None:
    with pytest.raises(SpecError) as err:
        build_allowed(spec, (3, 32, 32))
    assert str(err.value) == error


def test_a_single_unknown_word_is_still_refused_as_a_model_name() -> None:
    with pytest.raises(ModelChoiceError) as err:
        build_allowed("evil.py:Net", (3, 32, 32))
    assert str(err.value).startswith("model 'evil.py:Net' is not a choice of the built-in trainer: a zoo net (")


def test_a_checkpoint_that_does_not_fit_says_how_many_keys_more(tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(**{**SMALL, "steps": 2}), tmp_path / "run")  # type: ignore[arg-type]
    own = trainer.model.state_dict()
    assert sorted(own) == [
        "conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight", "conv3.bias", "conv3.weight", "fc.bias", "fc.weight",
    ]  # fmt: skip
    other, _ = build_allowed("conv 4 3\nconv 4 3\nfc 10", (3, 32, 32))  # conv1, conv2, fc1: 6 keys
    trainer.writer.checkpoint_path("other").parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(trainer.writer.checkpoint_path("other")))
    reader = RunReader(tmp_path / "run")
    ident = reader.send_control("load_checkpoint", "other")
    before = {k: v.clone() for k, v in own.items()}
    trainer.recorder.poll_every = 0.0
    trainer.recorder.handle_controls()
    result = next(c["result"] for c in reader.controls() if c["id"] == ident)
    assert result == {
        "ok": False,
        "error": "checkpoint 'other' does not fit this model (missing or different: conv1.bias, conv1.weight, "
        "conv2.bias, conv2.weight, conv3.bias … and 3 more; not in this model: fc1.bias, fc1.weight)",
    }
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.writer.close()


def _checkpoint(run: Path, name: str, metadata: dict[str, str] | None) -> dict[str, Any]:
    path = run / "checkpoints" / f"{name}.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_file({"w": torch.zeros(1)}, str(path), metadata=metadata)
    return {"name": name, "file": f"checkpoints/{name}.safetensors", "step": 1, "time": 0.0, "bytes": 1}


SPEC = "conv 8 3 pad 1 relu\npool 2\nfc 10"
ZOO = ["convnetjs-cifar", "tiny-vgg"]


def test_describe_checkpoints_names_each_net_and_whether_it_fits(tmp_path: Path) -> None:
    shape = json.dumps([3, 32, 32])
    rows = [
        _checkpoint(tmp_path, "cifar", {"model": "zoo:convnetjs-cifar", "input_shape": shape}),
        _checkpoint(tmp_path, "vgg", {"model": "zoo:tiny-vgg", "input_shape": shape}),
        _checkpoint(tmp_path, "same-spec", {"model": "layer spec", "spec": SPEC.replace(" relu", " tanh"), "input_shape": shape}),
        _checkpoint(tmp_path, "spec-16", {"model": "layer spec", "spec": SPEC, "input_shape": json.dumps([3, 16, 16])}),
        _checkpoint(tmp_path, "bare", None),
        {"name": "gone", "file": "checkpoints/gone.safetensors", "step": None, "time": 0.0, "bytes": 0},
    ]
    on_zoo = {"model": "zoo:convnetjs-cifar", "zoo": ZOO, "spec": "conv 16 5 pad 2 relu\nfc 10", "input_shape": [3, 32, 32]}
    on_spec = {"model": "layer spec", "zoo": ZOO, "spec": SPEC, "input_shape": [3, 32, 32]}
    on_bare_zoo = {**on_zoo, "model": "tiny-vgg"}  # as a restart from the dashboard records it
    got = {m: [(c["name"], c["net"], c["fits"]) for c in describe_checkpoints(rows, meta, tmp_path)]
           for m, meta in (("zoo", on_zoo), ("spec", on_spec), ("bare", on_bare_zoo))}  # fmt: skip
    assert got == {
        "zoo": [("cifar", "convnetjs-cifar", True), ("vgg", "tiny-vgg", False), ("same-spec", "layer spec", False),
                ("spec-16", "layer spec", False), ("bare", None, None), ("gone", None, None)],
        # activations hold no weights: the same layers with tanh fit; another input size does not
        "spec": [("cifar", "convnetjs-cifar", False), ("vgg", "tiny-vgg", False), ("same-spec", "layer spec", True),
                 ("spec-16", "layer spec", False), ("bare", None, None), ("gone", None, None)],
        "bare": [("cifar", "convnetjs-cifar", False), ("vgg", "tiny-vgg", True), ("same-spec", "layer spec", False),
                 ("spec-16", "layer spec", False), ("bare", None, None), ("gone", None, None)],
    }  # fmt: skip


def test_the_run_route_lists_checkpoints_with_their_net(tmp_path: Path) -> None:
    """A real trainer's checkpoints (its own metadata) through GET /api/runs/{run}."""
    trainer = Trainer(TrainConfig(**{**SMALL, "steps": 2}), tmp_path / "live")  # type: ignore[arg-type]
    trainer.train_step()
    trainer.writer.save_checkpoint(trainer.model.state_dict(), "mine", trainer.checkpoint_metadata())
    trainer._restart("tiny-vgg")  # the run's net changes: "mine" no longer fits
    trainer.train_step()  # commits the new net's meta
    trainer.writer.save_checkpoint(trainer.model.state_dict(), "vgg", trainer.checkpoint_metadata())
    with TestClient(create_app(tmp_path, ServeConfig()), base_url=BASE, headers={"Origin": BASE}) as c:
        res = c.get("/api/runs/live")
    assert res.status_code == 200
    got = [(x["name"], x["net"], x["fits"]) for x in res.json()["checkpoints"]]
    assert got == [  # the trainer's own evolution checkpoints (its first two steps) and the two saved
        ("evo-000001", "convnetjs-cifar", False), ("mine", "convnetjs-cifar", False),
        ("evo-000002", "tiny-vgg", True), ("vgg", "tiny-vgg", True),
    ]  # fmt: skip
    trainer.writer.close()
