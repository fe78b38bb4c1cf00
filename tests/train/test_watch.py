"""watch(): what the user's loop records, checked against plain autograd, and the recorder's lifetime."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_same_model
from torch import nn

from convscope.analysis import block_stats
from convscope.capture import count_hooks
from convscope.runs import RunReader
from convscope.train import watch


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )  # fmt: skip


def test_watch_records_exact_scalars_stats_and_snapshots(tmp_path: Path) -> None:
    model, twin = _net(), _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.1)
    xs = [torch.randn(4, 1, 4, 4) for _ in range(3)]
    ys = [torch.tensor([0, 1, 2, 1]) for _ in range(3)]
    losses, expected_stats = [], []
    with watch(model, tmp_path / "run", snapshot_every=0.0, budget=None) as run:  # everything, every step
        for x, y in zip(xs, ys, strict=True):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss, acc=0.5)
            # the oracle: the same step by hand on a twin, with autograd.grad for dL/da
            w_before = twin[0].weight.detach().clone()
            z = F.conv2d(x, twin[0].weight, twin[0].bias, padding=1)
            a = torch.relu(z)
            t_loss = F.cross_entropy(twin[3](a.flatten(1)), y)
            g_a, g_w = torch.autograd.grad(t_loss, [a, twin[0].weight], retain_graph=True)
            opt_twin.zero_grad()
            t_loss.backward()
            opt_twin.step()
            losses.append(float(t_loss.detach()))
            expected_stats.append(block_stats(a, z, g_a, twin[0].weight.detach(), g_w, w_before))
    assert count_hooks(model) == 0
    assert_same_model(model, twin)
    r = RunReader(tmp_path / "run")
    assert r.meta()["status"] == "finished" and r.meta()["trainer"] == "watch"
    sc = r.scalars()
    assert [s for s, _ in sc["loss"]] == [0, 1, 2]
    assert [v for _, v in sc["loss"]] == pytest.approx(losses, abs=1e-6)
    assert [v for _, v in sc["train_acc"]] == [0.5, 0.5, 0.5]  # acc= is the training accuracy
    assert [v for _, v in sc["examples"]] == [4.0, 8.0, 12.0]
    stats = [row for row in r.layer_stats(layer="0")]
    assert [row["step"] for row in stats] == [0, 1, 2]
    for row, exp in zip(stats, expected_stats, strict=True):
        for key, value in exp.items():
            assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    step, w = r.snapshot("0", "weight")
    assert step == 2 and torch.allclose(w, w_before, atol=1e-3)  # W used in step 2's forward (float16)
    layers = r.json("layers")
    assert layers is not None and [row["name"] for row in layers[1]] == ["0", "3"]
    assert layers[1][0]["formula"] == "2 × 1 × 3 × 3 + 2 = 20" and layers[1][0]["activation"] == "ReLU"


def test_the_recorder_lets_go_of_each_steps_maps(tmp_path: Path) -> None:
    """Once step() has read a probed step's trace (statistics, a snapshot), nothing of the recorder
    holds it: its maps are freed before the next training step, not at the next probed one."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[weakref.ref[object]] = []
    with watch(model, tmp_path / "run", snapshot_every=0.5, budget=None) as run:
        log_stats = run._log_stats

        def spy(step: int, trace: Any) -> None:
            seen.append(weakref.ref(trace["0"].a))
            log_stats(step, trace)

        run._log_stats = spy  # type: ignore[method-assign]
        for _ in range(3):
            loss = F.cross_entropy(model(torch.randn(4, 1, 4, 4)), torch.tensor([0, 1, 2, 1]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss)
            del loss
            gc.collect()
            assert seen and seen[-1]() is None, f"step {run.step_index - 1}: its map a is still held"
    assert len(seen) == 3  # (no budget: statistics every step, the first a snapshot)
    assert count_hooks(model) == 0


def test_watch_status_on_error_and_hooks_gone(tmp_path: Path) -> None:
    model = _net()
    with pytest.raises(RuntimeError, match="boom"), watch(model, tmp_path / "run") as run:
        model(torch.randn(2, 1, 4, 4)).sum().backward()
        run.step(loss=1.0)
        raise RuntimeError("boom")
    assert count_hooks(model) == 0
    r = RunReader(tmp_path / "run")
    assert r.meta()["status"] == "crashed" and r.last_step() == 0
    with pytest.raises(TypeError, match="must be a number"):
        watch(_net(), tmp_path / "run2").step(loss="high")  # type: ignore[arg-type]


def test_pause_blocks_the_loop_until_resume(tmp_path: Path) -> None:
    model = _net()
    run = watch(model, tmp_path / "run")
    run.poll_every = 0.0
    x = torch.randn(2, 1, 4, 4)
    model(x).sum().backward()
    run.step(loss=1.0)
    reader = RunReader(tmp_path / "run")
    reader.send_control("pause", True)
    done = threading.Event()

    def loop() -> None:
        model(x).sum().backward()
        run.step(loss=2.0)  # picks up the pause here and blocks
        done.set()

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(1.0)
    assert not done.is_set() and reader.meta()["status"] == "paused"
    reader.send_control("resume", True)
    t.join(timeout=10)
    assert done.is_set()
    acks = {c["key"]: c for c in reader.controls()}
    assert acks["pause"]["result"] == {"ok": True} and acks["resume"]["applied_step"] is not None
    reader.send_control("lr", 0.5)
    model(x).sum().backward()
    run.step(loss=3.0)
    lr = next(c for c in reader.controls() if c["key"] == "lr")
    assert lr["result"]["ok"] is False and "built-in trainer" in lr["result"]["error"]
    run.close()
    assert count_hooks(model) == 0


def test_live_findings_flag_a_dead_filter_with_the_step_it_appeared(tmp_path: Path) -> None:
    model = _net()
    with torch.no_grad():
        model[0].bias[1] = -100.0  # filter 1 can never fire on inputs of this size
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # nothing changes: the finding must persist
    run = watch(model, tmp_path / "run", budget=None)  # a diagnosis sample every step
    run.diagnose_every, run.findings_every = 1, 0.0
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=loss)
    run.close()
    step, findings = RunReader(tmp_path / "run").json("findings")
    dead = [f for f in findings if f["kind"] == "dead"]
    assert step == 2 and len(dead) == 1
    assert dead[0]["layer"] == "0" and dead[0]["filters"] == [1]
    assert dead[0]["step"] == 0  # first seen at step 0 and every window since
    assert "dead on this data (4 inputs of recent training batches)" in dead[0]["message"]
    assert dead[0]["evidence"]
    assert count_hooks(model) == 0
