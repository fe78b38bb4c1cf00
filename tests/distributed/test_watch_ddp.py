"""watch() under DDP (torchrun, 2 ranks, gloo): the recorded statistics are those of one process over
the global batch; rank 0 alone writes; a pause from the store pauses both ranks; a killed rank ends
the job with the run closed as crashed."""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from convscope.analysis import block_stats
from convscope.capture import Probe, count_hooks
from convscope.capture.naming import RELU, base_name
from convscope.runs import RunReader

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"
SCRIPT = HERE / "watch_ddp_script.py"
LIMIT_S = 180.0


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("watch_ddp_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = _script()


def _launch(mode: str, out: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(SCRIPT), mode, str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        text, _ = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
        raise AssertionError(f"torchrun did not end within {LIMIT_S}s:\n{text[-4000:]}") from None
    return proc.returncode, text


def _wait(what: str, cond: Callable[[], bool], limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def _last_step(run: Path) -> int:
    if not (run / "run.sqlite").exists():
        return -1
    with RunReader(run) as r:
        last = r.last_step()
    return -1 if last is None else last


def _progress(out: Path, rank: int) -> int:
    f = out / f"progress-{rank}"
    return int(f.read_text()) if f.exists() else -1


def _oracle(step: int, weights: list[dict[str, torch.Tensor]]) -> tuple[float, dict[str, dict[str, float]]]:
    """One process, the whole global batch, the weights rank 0 used at `step`: loss and block_stats."""
    model, after = S.net(), S.net()
    model.load_state_dict(weights[step])
    after.load_state_dict(weights[step + 1])
    modules = dict(after.named_modules())
    x, y = S.batch(step)
    with Probe(model) as probe:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    out = {}
    for name, b in probe.trace.items():
        w = getattr(modules.get(base_name(name)), "weight", None)
        used = b.weight if w is not None else None
        out[name] = block_stats(b.a, b.z, b.grad_a, w, b.grad_weight, used, relu=b.activation in RELU)
    assert count_hooks(model) == 0
    return float(loss.detach()), out


def test_ddp_watch_records_the_global_batch_on_rank_0_only(tmp_path: Path) -> None:
    code, text = _finish(_launch("equal", tmp_path))
    assert code == 0, text[-4000:]
    assert (tmp_path / "rank1-clean").read_text() == "ok"
    weights = torch.load(tmp_path / "weights.pt")
    steps = len(S.SPLITS)
    assert len(weights) == steps + 1
    with RunReader(tmp_path / "run") as r:
        assert r.meta()["status"] == "finished"
        assert r.last_step() == steps - 1
        losses = dict(r.scalars(["loss"])["loss"])
        examples = dict(r.scalars(["examples"])["examples"])
        assert sorted(losses) == list(range(steps))
        assert [examples[s] for s in range(steps)] == [8.0 * (s + 1) for s in range(steps)]
        seen_dead = False
        for step in range(steps):
            loss, want = _oracle(step, weights)
            assert losses[step] == pytest.approx(loss, rel=1e-6)
            for layer, stats in want.items():
                got = _stats_at(r, layer, step)
                if step >= 3:  # unequal shares (5 + 3): DDP averages two local means, not the global one
                    stats = {k: v for k, v in stats.items() if k != "grad_weight_norm"}
                    got.pop("grad_weight_norm", None)
                assert set(got) == set(stats), (layer, step)
                for key, value in stats.items():
                    if key == "dead_fraction":
                        assert got[key] == value, (layer, step, key)
                    elif key in ("a_min", "a_max", "z_min", "z_max"):  # a smaller batch's matmul may round the last bit apart
                        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (layer, step, key)
                    else:
                        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), (layer, step, key)
                seen_dead |= 0 < stats.get("dead_fraction", 0) < 1
            x, _ = S.batch(step)
            found = r.snapshot(next(iter(want)), "x", step=step)
            assert found is not None and found[0] == step
            assert torch.allclose(found[1], x[:1], rtol=1e-3, atol=1e-3)  # example 0 of rank 0's share (float16)
            assert not torch.allclose(found[1], x[S.split(step) : S.split(step) + 1], atol=1e-2)  # not rank 1's
        assert seen_dead
    store = {"run.sqlite", "run.sqlite-wal", "run.sqlite-shm", "checkpoints", ".writer.lock"}
    assert {p.name for p in (tmp_path / "run").iterdir()} <= store  # one store, rank 0's


def _stats_at(r: RunReader, layer: str, step: int) -> dict[str, float]:
    rows = [row for row in r.layer_stats(layer) if row["step"] == step]
    assert len(rows) == 1, (layer, step, rows)
    return {k: v for k, v in rows[0].items() if k not in ("step", "layer")}


def test_a_pause_from_the_store_pauses_both_ranks_and_resume_resumes_them(tmp_path: Path) -> None:
    proc = _launch("pause", tmp_path)
    run = tmp_path / "run"
    try:
        _wait("step 3", lambda: _last_step(run) >= 3 and _progress(tmp_path, 1) >= 3)
        with RunReader(run) as r:
            ident = r.send_control("pause", None)
            _wait("the pause acknowledged", lambda: (r.control(ident) or {}).get("result") is not None)
            assert r.control(ident)["result"] == {"ok": True}  # type: ignore[index]
            _wait("status paused", lambda: r.meta()["status"] == "paused")
            held = (_progress(tmp_path, 0), _progress(tmp_path, 1))
            time.sleep(1.0)
            assert (_progress(tmp_path, 0), _progress(tmp_path, 1)) == held  # neither rank advanced
            assert abs(held[0] - held[1]) <= 1
            ident = r.send_control("resume", None)
            _wait("both ranks moving again", lambda: min(_progress(tmp_path, 0) - held[0], _progress(tmp_path, 1) - held[1]) >= 3)
        (tmp_path / "stop").write_text("")
        code, text = _finish(proc)
        assert code == 0, text[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    with RunReader(run) as r:
        assert r.meta()["status"] == "finished"
        assert r.control(ident)["result"] == {"ok": True}  # type: ignore[index]


def test_killing_rank_1_ends_the_job_and_the_run_reads_as_crashed(tmp_path: Path) -> None:
    proc = _launch("kill", tmp_path)
    run = tmp_path / "run"
    try:
        _wait("step 3", lambda: _last_step(run) >= 3 and (tmp_path / "pid-1").exists())
        os.kill(int((tmp_path / "pid-1").read_text()), signal.SIGKILL)
        code, text = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code != 0, text[-4000:]
    with RunReader(run) as r:
        assert r.meta()["status"] == "crashed"
        last = r.last_step()
        assert last is not None and last >= 3
        assert sorted(s for s, _ in r.scalars(["loss"])["loss"]) == list(range(last + 1))
    con = sqlite3.connect(f"file:{run / 'run.sqlite'}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()
