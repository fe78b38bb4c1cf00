"""Issue 7, the trainer's side: a row in the run store is not trusted. The `model` control never
makes the trainer import or run code (case 1), a checkpoint that cannot be read is refused with
one line while training goes on with the weights it had (case 6), and controls queued while no
trainer was running are refused at resume, not applied late (case 9)."""

from __future__ import annotations

import base64
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from convscope.config import TrainConfig
from convscope.models import zoo_names
from convscope.runs import RunReader
from convscope.train import Recorder, Trainer, watch

SMALL = dict(train_size=256, val_size=64, test_images=4, batch_size=16, val_every=5, snapshot_every=0.0)
CHOICES = [f"zoo:{name}" for name in zoo_names()] + ["layer-spec text"]


def _evil_module(tmp_path: Path) -> tuple[Path, Path]:
    """A model file that leaves a marker file behind if anything imports it."""
    marker = tmp_path / "evil-was-imported"
    evil = tmp_path / "evil.py"
    evil.write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "import torch\n"
        "class Net(torch.nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))\n"
    )
    return evil, marker


def _choice_error(spec: str) -> str:
    return (
        f"model {spec!r} is not a choice of the built-in trainer: a zoo net ({', '.join(CHOICES[:-1])}) "
        "or layer-spec text such as 'conv 8 3 pad 1 relu; pool 2; fc 10' (import paths are not accepted here)"
    )


def _results(reader: RunReader, ids: list[int], proc: subprocess.Popen[bytes], timeout: float) -> dict[int, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = {c["id"]: c["result"] for c in reader.controls() if c["id"] in ids}
        if all(rows.get(i) is not None for i in ids):
            return rows
        assert proc.poll() is None, f"the trainer died (exit code {proc.returncode})"
        time.sleep(0.1)
    pytest.fail(f"controls {ids} not acknowledged within {timeout} s")


def test_model_control_in_the_store_never_imports_code(tmp_path: Path) -> None:
    """Case 1: rows written straight into the store (not through the server's check) by a
    running `convscope train`: refused with the valid choices; the trainer trains on."""
    evil, marker = _evil_module(tmp_path)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "convscope", "train", "--run", str(run), "--train-size", "256", "--batch-size", "8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ((run / "run.sqlite").exists() and (RunReader(run).last_step() or 0) >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, "the trainer did not start"
            time.sleep(0.1)
        reader = RunReader(run)
        ids = [
            reader.send_control("model", "os:abort"),
            reader.send_control("model", f"{evil}:Net"),
            reader.send_control("model", "convnetjs-cifar"),  # a zoo name without zoo: is a choice
        ]
        results = _results(reader, ids, proc, timeout=30)
        step_at_ack = reader.last_step() or 0
        while (reader.last_step() or 0) < step_at_ack + 2:  # still training
            assert proc.poll() is None and time.monotonic() < deadline, "the trainer stopped training"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert results[ids[0]] == {"ok": False, "error": _choice_error("os:abort"), "choices": CHOICES}
    assert results[ids[1]] == {"ok": False, "error": _choice_error(f"{evil}:Net"), "choices": CHOICES}
    assert results[ids[2]] == {"ok": True, "model": "convnetjs-cifar"}
    assert not marker.exists()
    assert proc.returncode == 0
    assert RunReader(run).meta()["status"] == "stopped"


def test_trainer_refuses_an_import_path_as_its_model(tmp_path: Path) -> None:
    """Case 1, `convscope train --model file.py:Class`: the same rule, before anything is imported."""
    evil, marker = _evil_module(tmp_path)
    with pytest.raises(ValueError) as err:
        Trainer(TrainConfig(**SMALL, model=f"{evil}:Net"), tmp_path / "run")  # type: ignore[arg-type]
    assert not marker.exists()
    assert str(err.value) == _choice_error(f"{evil}:Net")
    assert getattr(err.value, "choices", None) == CHOICES


def _bad_checkpoints(trainer: Trainer, directory: Path, marker: Path) -> dict[str, str]:
    """name -> the one-line reason the trainer must give for checkpoints/NAME.safetensors."""
    directory.mkdir(exist_ok=True)
    good = trainer.writer.save_checkpoint(trainer.model.state_dict(), "good").read_bytes()
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in trainer.model.state_dict().items()}  # contiguous
    files = {
        "truncated": good[: len(good) // 2],
        "huge-header": struct.pack("<Q", 2**62) + b'{"a": 1}',
        "random": np.random.default_rng(0).bytes(4096),
        "pickle": pickle.dumps((open, (str(marker), "w"))),  # unpickled, it would create the marker
    }
    for name, raw in files.items():
        (directory / f"{name}.safetensors").write_bytes(raw)
    save_file({**state, "evil": torch.zeros(1)}, str(directory / "extra-key.safetensors"))
    save_file({**state, "conv1.weight": state["conv1.weight"].double()}, str(directory / "dtype.safetensors"))
    header = "Error while deserializing header"
    return {
        "truncated": f"checkpoint 'truncated' cannot be read: {header}: incomplete metadata, file not fully covered",
        "huge-header": f"checkpoint 'huge-header' cannot be read: {header}: header too large",
        "random": f"checkpoint 'random' cannot be read: {header}: header too large",
        "pickle": f"checkpoint 'pickle' cannot be read: {header}: header too large",
        "extra-key": "checkpoint 'extra-key' does not fit this model (not in this model: evil)",
        "dtype": "checkpoint 'dtype' does not fit this model (missing or different: conv1.weight)",
    }


def test_a_bad_checkpoint_is_refused_and_training_goes_on(tmp_path: Path) -> None:
    """Case 6: truncated, 2^62 header length, random bytes, a pickle, a file that does not fit:
    each answered ok: false with one line; the weights stay as they were; the run finishes."""
    trainer = Trainer(TrainConfig(**{**SMALL, "steps": 4}), tmp_path / "run")  # type: ignore[arg-type]
    reader = RunReader(tmp_path / "run")
    trainer.recorder.poll_every = 0.0
    trainer.train_step()
    marker = tmp_path / "unpickled"
    expected = _bad_checkpoints(trainer, tmp_path / "run" / "checkpoints", marker)
    ids = {name: reader.send_control("load_checkpoint", name) for name in expected}
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.recorder.handle_controls()  # what every step does after its commit
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    results = {c["id"]: c["result"] for c in reader.controls()}
    assert {name: results[i] for name, i in ids.items()} == {
        name: {"ok": False, "error": reason} for name, reason in expected.items()
    }
    assert not marker.exists()
    trainer.run()
    assert reader.meta()["status"] == "finished" and reader.last_step() == 3


def test_controls_sent_while_no_trainer_ran_are_refused_at_resume(tmp_path: Path) -> None:
    """Case 9: train, stop, queue "pause" and an lr while nothing runs, resume: not paused, lr as
    configured, both acknowledged ok: false at the first step of the resumed trainer."""
    run = tmp_path / "run"
    first = Trainer(TrainConfig(**{**SMALL, "steps": 3}), run)  # type: ignore[arg-type]
    first.run()
    reader = RunReader(run)
    assert reader.meta()["status"] == "finished"
    stale = [reader.send_control("pause", None), reader.send_control("lr", 0.02)]

    resumed = Trainer(TrainConfig(**{**SMALL, "steps": 6}), run, resume=True)  # type: ignore[arg-type]
    resumed.recorder.poll_every = 0.0
    fresh = reader.send_control("momentum", 0.5)  # sent while it runs: applied
    worker = threading.Thread(target=resumed.run)
    worker.start()
    worker.join(timeout=30)
    hung = worker.is_alive()
    if hung:  # paused by the stale control: end the pause so the test ends
        resumed.stop()
        worker.join()
    assert not hung and reader.meta()["status"] == "finished" and reader.last_step() == 5
    rows = {c["id"]: c for c in reader.controls()}
    for i in stale:
        assert rows[i]["result"] == {"ok": False, "error": "sent while no trainer was running"}
        assert rows[i]["applied_step"] == 3
    assert rows[fresh]["result"] == {"ok": True, "momentum": 0.5}
    lr = TrainConfig.lr  # the default: the stale lr control was not applied
    assert resumed.lr == lr and resumed.opt.param_groups[0]["lr"] == lr
    logged = [(s, v) for s, v in reader.scalars(names=["lr"])["lr"] if s >= 3]
    assert logged == [(3, lr), (4, lr)]  # its first step, and step 4, the first with momentum 0.5


def test_watch_refuses_a_pause_queued_before_it_started(tmp_path: Path) -> None:
    """Case 9 for the user's own loop: a pause queued before `watch(..., resume=True)` does not
    block the first step."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    with watch(model, tmp_path / "run") as run:
        model(torch.ones(1, 1, 5, 5)).sum().backward()
        run.step(loss=1.0)
    reader = RunReader(tmp_path / "run")
    pid = reader.send_control("pause", None)
    run = watch(model, tmp_path / "run", resume=True)
    run.poll_every = 0.0
    model(torch.ones(1, 1, 5, 5)).sum().backward()
    done = threading.Event()

    def step() -> None:
        run.step(loss=1.0)
        done.set()

    worker = threading.Thread(target=step)
    worker.start()
    worker.join(timeout=10)
    if not done.is_set():  # paused by the stale control: close ends the pause
        run.paused = False
        worker.join()
    run.close()
    assert done.is_set()
    assert [c["result"] for c in reader.controls() if c["id"] == pid] == [
        {"ok": False, "error": "sent while no trainer was running"}
    ]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width × height (1-bit grey) and holds no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_numbers_and_pictures_out_of_range_are_refused_by_the_trainer(tmp_path: Path) -> None:
    """Cases 5/6 on the trainer's side: rows written straight into the store with a 400-digit lr,
    lr=1e308, a bool, a string, out-of-range values, and a 30000×30000 PNG for predict: each one
    line, ok: false; the settings stay; training goes on."""
    trainer = Trainer(TrainConfig(**{**SMALL, "steps": 3}), tmp_path / "run")  # type: ignore[arg-type]
    reader = RunReader(tmp_path / "run")
    trainer.recorder.poll_every = 0.0
    trainer.train_step()
    bomb = base64.b64encode(_png_header_only(30_000, 30_000)).decode()
    big = base64.b64encode(_png_header_only(6_000, 6_000)).decode()  # under PIL's bomb limit, over the cap
    sent = [
        ("lr", 10**400), ("lr", 1e308), ("lr", True), ("lr", "0.1"), ("lr", 0),
        ("momentum", 1), ("batch_size", 2.5), ("batch_size", 5000), ("weight_decay", 5),
        ("predict", {"png_b64": bomb}), ("predict", {"png_b64": big}),
    ]  # fmt: skip
    ids = [reader.send_control(k, v) for k, v in sent]
    trainer.recorder.handle_controls()
    results = {c["id"]: c["result"] for c in reader.controls()}
    errors = [results[i]["error"] if results[i]["ok"] is False else results[i] for i in ids]
    assert errors[:9] == [
        "lr=a 401-digit number is out of range: lr must be 0 < lr <= 10",
        "lr=1e+308 is out of range: lr must be 0 < lr <= 10",
        "lr needs a number, got bool: lr must be 0 < lr <= 10",
        "lr needs a number, got str: lr must be 0 < lr <= 10",
        "lr=0 is out of range: lr must be 0 < lr <= 10",
        "momentum=1 is out of range: momentum must be 0 <= momentum < 1",
        "batch_size=2.5 is out of range: batch_size must be an integer in 1..4096",
        "batch_size=5000 is out of range: batch_size must be an integer in 1..4096",
        "weight_decay=5 is out of range: weight_decay must be 0 <= weight_decay <= 1",
    ]
    assert errors[9].startswith("predict: Image size (900000000 pixels) exceeds limit of ")
    assert errors[10] == "predict: a 6000×6000 picture is over 25,000,000 pixels"
    group = trainer.opt.param_groups[0]
    d = TrainConfig
    assert (group["lr"], group["momentum"], group["weight_decay"], trainer.batch_size) == (d.lr, d.momentum, d.weight_decay, 16)
    trainer.run()
    assert reader.meta()["status"] == "finished" and reader.last_step() == 2


def test_any_failure_of_a_control_is_its_answer_not_the_end_of_the_run(tmp_path: Path) -> None:
    def handler(ctrl: Any) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero\nin a handler")

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    run = Recorder(model, tmp_path / "run", on_control=handler, poll_every=0.0)
    reader = RunReader(tmp_path / "run")
    pid = reader.send_control("anything", 1)
    model(torch.ones(1, 1, 5, 5)).sum().backward()
    run.step(loss=1.0)
    run.step(loss=1.0)
    run.close()
    assert [c["result"] for c in reader.controls() if c["id"] == pid] == [
        {"ok": False, "error": "ZeroDivisionError: division by zero in a handler"}
    ]
    assert reader.meta()["status"] == "finished" and reader.last_step() == 1
