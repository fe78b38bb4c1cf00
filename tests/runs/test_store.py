"""RunWriter / RunReader: exact values back, the step transaction, controls, checkpoints,
resume, schema versions, list_runs and bad input."""

from __future__ import annotations

import math
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from convscope.runs import (
    SCHEMA_VERSION,
    Control,
    RunBusyError,
    RunCorruptError,
    RunExistsError,
    RunNotFoundError,
    RunReader,
    RunSchemaError,
    RunWriter,
    list_runs,
    writer,
)


def test_values_round_trip_exactly(tmp_path: Path) -> None:
    run = tmp_path / "exp1"
    w = RunWriter(
        run,
        config={"lr": 0.01, "layers": [8, 16]},
        meta={"model": "zoo:tiny", "classes": ["a", "b"]},
    )
    w.log_scalars(0, {"loss": 2.3, "examples": 640, "f32": np.float32(0.1), "t": torch.tensor(1.5)})
    w.log_scalars(0, {"nan": math.nan, "inf": math.inf, "neg": -math.inf})
    w.log_layer_stats(0, "conv1", {"a_mean": 0.25, "dead_fraction": 0.0})
    w.log_layer_stats(0, "conv1", {"grad_a_norm": math.nan})  # merged with the first call
    w.log_layer_stats(0, "conv2", {"a_mean": -1.0})
    w.log_snapshot(0, "conv1", "a", torch.tensor([[0.5, -1.25], [0.0, 1024.0]]))
    w.log_snapshot(0, "conv1", "weight", torch.tensor([1e6, 0.1]))
    w.log_snapshot(0, "conv1", "grad_a", torch.tensor([math.nan, 1.0]))
    w.log_snapshot(0, "_test", "input", np.zeros((2, 3, 4, 4), dtype=np.float32))
    w.log_json(0, "layers", [{"name": "conv1", "kernel": [3, 3]}])
    w.set_meta("status", "running")
    w.commit(0)
    w.log_scalars(5, {"loss": 1.75})
    w.log_layer_stats(5, "conv1", {"a_mean": 0.5})
    w.log_snapshot(5, "conv1", "a", torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    w.log_json(5, "layers", [])
    w.commit(5)

    r = RunReader(run)
    m = r.meta()
    assert m["status"] == "running" and m["last_step"] == 5 and m["model"] == "zoo:tiny"
    assert m["classes"] == ["a", "b"] and m["schema_version"] == SCHEMA_VERSION
    assert isinstance(m["created"], float) and m["created"] <= m["updated"] <= time.time()
    assert r.config() == {"lr": 0.01, "layers": [8, 16]}
    assert r.last_step() == 5
    sc = r.scalars()
    assert sc["loss"] == [(0, 2.3), (5, 1.75)]
    assert sc["examples"] == [(0, 640.0)]
    assert sc["f32"] == [(0, float(np.float32(0.1)))]
    assert sc["t"] == [(0, 1.5)]
    assert sc["inf"] == [(0, math.inf)] and sc["neg"] == [(0, -math.inf)]
    assert sc["nan"][0][0] == 0 and math.isnan(sc["nan"][0][1])
    assert r.scalars(["loss", "val_acc"]) == {"loss": [(0, 2.3), (5, 1.75)], "val_acc": []}
    assert r.scalars("loss", since=0) == {"loss": [(5, 1.75)]}  # since is exclusive
    stats = r.layer_stats()
    assert [(s["step"], s["layer"]) for s in stats] == [(0, "conv1"), (0, "conv2"), (5, "conv1")]
    assert (
        stats[0]["a_mean"] == 0.25
        and stats[0]["dead_fraction"] == 0.0
        and math.isnan(stats[0]["grad_a_norm"])
    )
    assert r.layer_stats("conv1", since=0) == [{"step": 5, "layer": "conv1", "a_mean": 0.5}]

    assert r.snapshot_steps("conv1", "a") == [0, 5]
    step, t = r.snapshot("conv1", "a", step=4)  # type: ignore[misc]
    assert (
        step == 0
        and t.dtype == torch.float32
        and torch.equal(t, torch.tensor([[0.5, -1.25], [0.0, 1024.0]]))
    )
    step, t = r.snapshot("conv1", "a")  # type: ignore[misc]
    assert step == 5 and t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    _, w32 = r.snapshot("conv1", "weight")  # type: ignore[misc]
    assert torch.equal(w32, torch.tensor([1e6, 0.1])) and w32[0].item() == 1e6
    _, g = r.snapshot("conv1", "grad_a")  # type: ignore[misc]
    assert math.isnan(g[0].item()) and g[1].item() == 1.0
    _, x = r.snapshot("_test", "input")  # type: ignore[misc]
    assert x.shape == (2, 3, 4, 4) and not x.any()
    assert r.snapshot("conv1", "z") is None and r.snapshot("conv2", "a", step=3) is None
    assert r.snapshot_series() == [
        ("_test", "input"),
        ("conv1", "a"),
        ("conv1", "grad_a"),
        ("conv1", "weight"),
    ]
    assert r.json("layers", step=4) == (0, [{"name": "conv1", "kernel": [3, 3]}])
    assert r.json("layers") == (5, [])
    assert r.json("predictions") is None
    w.close()
    assert r.meta()["status"] == "finished"
    r.close()


def test_nothing_is_visible_before_commit(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    r = RunReader(tmp_path / "run")
    w.log_scalars(3, {"loss": 1.0})
    w.log_layer_stats(3, "conv1", {"a_mean": 1.0})
    w.log_snapshot(3, "conv1", "a", torch.ones(2))
    w.log_json(3, "k", 1)
    w.set_meta("model", "m")
    assert r.scalars() == {} and r.layer_stats() == [] and r.snapshot("conv1", "a") is None
    assert r.json("k") is None and "model" not in r.meta() and r.last_step() is None
    with pytest.raises(ValueError, match=r"commit\(2\) but data was logged for step 3"):
        w.commit(2)
    w.commit(3)  # the buffered step was kept through the failed commit
    assert r.scalars() == {"loss": [(3, 1.0)]} and r.meta()["model"] == "m" and r.last_step() == 3
    w.log_scalars(3, {"acc": 0.5})  # committing the same step again adds to it
    w.commit(3)
    assert r.scalars() == {"loss": [(3, 1.0)], "acc": [(3, 0.5)]}
    w.log_layer_stats(3, "conv1", {"a_max": 2.0})  # and merges layer stats of that step
    w.commit(3)
    assert r.layer_stats() == [{"step": 3, "layer": "conv1", "a_mean": 1.0, "a_max": 2.0}]
    w.close()
    r.close()


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    with pytest.raises(TypeError, match=r"scalar 'loss' must be a number, got str"):
        w.log_scalars(0, {"loss": "2.3"})
    with pytest.raises(TypeError, match="must be a number, got NoneType"):
        w.log_scalars(0, {"loss": None})
    with pytest.raises(TypeError, match="must be a number, got bool"):
        w.log_scalars(0, {"ok": True})
    with pytest.raises(ValueError, match=r"single number, got a tensor of shape \(2,\)"):
        w.log_scalars(0, {"loss": torch.ones(2)})
    with pytest.raises(TypeError, match="mapping"):
        w.log_scalars(0, [("loss", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scalar name must be a non-empty string"):
        w.log_scalars(0, {"": 1.0})
    with pytest.raises(ValueError, match="layer must be a non-empty string"):
        w.log_snapshot(0, "", "a", torch.ones(1))
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        w.log_snapshot(0, "conv1", "", torch.ones(1))
    with pytest.raises(ValueError, match="layer must be a non-empty string"):
        w.log_layer_stats(0, 3, {"a": 1.0})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"layer stat conv1.a_mean must be a number"):
        w.log_layer_stats(0, "conv1", {"a_mean": [1.0]})
    with pytest.raises(ValueError, match="stat name 'step' is reserved"):
        w.log_layer_stats(0, "conv1", {"step": 1.0})
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        w.log_scalars(-1, {"loss": 1.0})
    with pytest.raises(TypeError, match="step must be an int, got float"):
        w.commit(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON-serialisable"):
        w.log_json(0, "k", object())
    with pytest.raises(ValueError, match="meta key 'last_step' is set by the run store"):
        w.set_meta("last_step", 3)
    with pytest.raises(TypeError, match=r"snapshot must be a torch.Tensor or numpy array"):
        w.log_snapshot(0, "conv1", "a", [1.0])  # type: ignore[arg-type]
    w.log_snapshot(0, "conv1", "my-own-kind", torch.ones(1))  # kinds are free-form
    w.commit(10)
    with pytest.raises(ValueError, match="step 9 is before the last committed step 10"):
        w.log_scalars(9, {"loss": 1.0})
    with pytest.raises(ValueError, match="step 9 is before the last committed step 10"):
        w.commit(9)
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.log_scalars(11, {"loss": 1.0})
    with pytest.raises(ValueError, match="status must be one of"):
        w.close("done")
    with pytest.raises(TypeError, match="retention must be a Retention"):
        RunWriter(tmp_path / "other", retention=400)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="meta key 'created' is set by the run store"):
        RunWriter(tmp_path / "other", meta={"created": 1})
    assert not (tmp_path / "other").exists()  # validated before anything touched the disk
    r = RunReader(tmp_path / "run")
    assert r.snapshot_steps("conv1", "my-own-kind") == [0] and r.scalars() == {}
    r.close()


def test_controls_round_trip(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    r = RunReader(tmp_path / "run")
    assert w.poll_controls() == []
    i1 = r.send_control("lr", 0.05)
    i2 = r.send_control("predict", {"upload": "u1"})
    assert (i1, i2) == (1, 2)
    polled = w.poll_controls()
    assert [(c.id, c.key, c.value) for c in polled] == [
        (1, "lr", 0.05),
        (2, "predict", {"upload": "u1"}),
    ]
    assert isinstance(polled[0], Control) and polled[0].time <= time.time()
    w.ack_control(1, 7, result={"ok": False, "error": "lr must be > 0"})
    assert [c.id for c in w.poll_controls()] == [2]
    w.ack_control(2, 8)
    assert w.poll_controls() == []
    got = r.controls()
    assert [{k: v for k, v in c.items() if k != "time"} for c in got] == [
        {
            "id": 1,
            "key": "lr",
            "value": 0.05,
            "applied_step": 7,
            "result": {"ok": False, "error": "lr must be > 0"},
        },
        {
            "id": 2,
            "key": "predict",
            "value": {"upload": "u1"},
            "applied_step": 8,
            "result": {"ok": True},
        },
    ]
    assert [c["id"] for c in r.controls(since_id=1)] == [2]
    with pytest.raises(ValueError, match="already acknowledged"):
        w.ack_control(1, 9)
    with pytest.raises(ValueError, match="no control with id 99"):
        w.ack_control(99, 9)
    with pytest.raises(ValueError, match="control key must be a non-empty string"):
        r.send_control("", 1)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        r.send_control("lr", {1, 2})
    w.close()
    r.close()


def test_checkpoints(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    w.commit(1200)
    shared = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    state = {
        "conv.weight": shared,
        "fc.weight": shared,
        "fc.bias": torch.tensor([0.5, -2.0]),
        "n": torch.tensor(3),
    }
    path = w.save_checkpoint(state, "step-1200")
    assert path == tmp_path / "run" / "checkpoints" / "step-1200.safetensors"
    loaded = load_file(str(path))
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert torch.equal(w.load_checkpoint("step-1200")["fc.bias"], torch.tensor([0.5, -2.0]))
    assert sorted(os.listdir(path.parent)) == ["step-1200.safetensors"]  # no temp file left
    r = RunReader(tmp_path / "run")
    (ck,) = r.checkpoints()
    assert ck["name"] == "step-1200" and ck["file"] == "checkpoints/step-1200.safetensors"
    assert ck["step"] == 1200 and ck["bytes"] == path.stat().st_size
    assert r.meta()["last_checkpoint"] == "step-1200"
    for bad in ("../x", "a/b", "a\\b", "", "..", ".hidden", "a..b", "x" * 129, 7):
        with pytest.raises(ValueError, match="checkpoint name must be"):
            w.save_checkpoint(state, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str -> Tensor"):
        w.save_checkpoint({"w": [1.0]}, "bad")  # type: ignore[dict-item]
    with pytest.raises(FileNotFoundError, match="no checkpoint 'nope'"):
        w.load_checkpoint("nope")
    assert sorted(os.listdir(path.parent)) == ["step-1200.safetensors"]
    w.close()
    r.close()


def test_exists_resume_and_one_writer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    w = RunWriter(run, config={"lr": 0.1, "bs": 32}, meta={"model": "m1"})
    with pytest.raises(RunBusyError, match="another RunWriter"):
        RunWriter(run, resume=True)
    w.log_scalars(4, {"loss": 1.0})
    w.commit(4)
    w.close("stopped")
    with pytest.raises(RunExistsError, match="pass resume=True"):
        RunWriter(run)
    w = RunWriter(run, config={"lr": 0.2}, meta={"model": "m2"}, resume=True)
    assert w.last_step == 4
    r = RunReader(run)
    assert r.meta()["status"] == "running" and r.meta()["model"] == "m2"
    assert r.config() == {"lr": 0.2, "bs": 32}  # given keys overwrite, the others stay
    with pytest.raises(ValueError, match="before the last committed step 4"):
        w.commit(3)
    w.log_scalars(5, {"loss": 0.5})
    w.commit(5)
    assert r.scalars() == {"loss": [(4, 1.0), (5, 0.5)]}
    w.close()
    r.close()
    fresh = RunWriter(tmp_path / "new", resume=True)  # resume of nothing starts a new run
    assert fresh.last_step is None
    fresh.close()


def test_close_and_context_manager(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "a") as w:
        w.log_scalars(1, {"loss": 1.0})  # not committed: "finished" commits it as the last step
    with RunReader(tmp_path / "a") as r:
        assert (
            r.meta()["status"] == "finished"
            and r.last_step() == 1
            and r.scalars() == {"loss": [(1, 1.0)]}
        )
    w.close()  # idempotent

    with pytest.raises(KeyError), RunWriter(tmp_path / "b") as w:
        w.log_scalars(0, {"loss": 1.0})
        w.commit(0)
        w.log_scalars(1, {"loss": 2.0})  # an interrupted step: dropped, never half-visible
        raise KeyError("boom")
    with RunReader(tmp_path / "b") as r:
        assert (
            r.meta()["status"] == "crashed"
            and r.last_step() == 0
            and r.scalars() == {"loss": [(0, 1.0)]}
        )


def test_reader_errors_and_schema_versions(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="does not exist"):
        RunReader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunNotFoundError, match=r"holds no run\.sqlite"):
        RunReader(tmp_path / "empty")
    RunWriter(tmp_path / "run").close()
    db = tmp_path / "run" / "run.sqlite"
    for value, pattern in (
        ("99", "schema version 99; this convscope reads up to 1"),
        ('"x"', "unknown schema_version"),
    ):
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
        conn.close()
        with pytest.raises(RunSchemaError, match=pattern):
            RunReader(tmp_path / "run")
        with pytest.raises(RunSchemaError, match=pattern):
            RunWriter(tmp_path / "run", resume=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RunCorruptError, match="not a database"):
        RunReader(tmp_path / "bad")
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / "run.sqlite").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(RunCorruptError, match="not a convscope run"):
        RunReader(other)


def test_list_runs(tmp_path: Path) -> None:
    RunWriter(tmp_path / "old", meta={"model": "zoo:a"}).close("stopped")
    time.sleep(0.01)
    w = RunWriter(tmp_path / "new", meta={"model": "zoo:b"})
    w.commit(7)
    (tmp_path / "notes").mkdir()  # not a run: skipped
    (tmp_path / "README.txt").write_text("hi")  # not a folder: skipped
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.sqlite").write_bytes(b"garbage" * 1000)
    os.utime(tmp_path / "broken" / "run.sqlite", (1.0, 1.0))  # listed by file time: oldest
    runs = list_runs(tmp_path)
    for row in runs:
        assert isinstance(row.pop("created"), float) or row["name"] == "broken"
    assert runs[:2] == [
        {"name": "new", "status": "running", "last_step": 7, "model": "zoo:b", "error": None},
        {"name": "old", "status": "stopped", "last_step": None, "model": "zoo:a", "error": None},
    ]
    (broken,) = runs[2:]
    assert broken["status"] == "unreadable" and broken["last_step"] is None
    assert "not a database" in broken["error"]
    with pytest.raises(RunNotFoundError, match="not a directory"):
        list_runs(tmp_path / "README.txt")
    w.close()


def test_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = RunWriter(tmp_path / "run")
    r = RunReader(tmp_path / "run")
    w.commit(0)
    assert not r.is_stale(60.0)
    time.sleep(0.05)
    assert r.is_stale(0.01)  # "trainer not responding": no commit for more than 0.01 s
    assert r.meta()["status"] == "running"
    monkeypatch.setattr(writer, "HEARTBEAT_S", 0.0)  # (1 s by default)
    before = r.meta()["updated"]
    w.poll_controls()  # a paused trainer that still polls is alive
    assert r.meta()["updated"] > before and not r.is_stale(1.0)
    w.close()
    assert not r.is_stale(0.0)  # finished runs are never stale
    r.close()
