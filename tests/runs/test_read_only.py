"""RunReader on a read-only mount (issue 7 case 7): a finished run (no -wal/-shm) opens
immutable and reads exactly as on a writable disk; a write is RunReadOnlyError; a run whose -wal
still holds steps cannot be read there and says so. The mount is real (runs/romount.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runs.romount import on_read_only_mount

from convscope.runs import RunReader, RunWriter

PROBE = r"""
import json, sys
from convscope.runs import RunReader, list_runs
from convscope.runs.store import RunStoreError
out = {{}}
try:
    with RunReader(sys.argv[1] if len(sys.argv) > 1 else {run!r}) as r:
        out["read_only"] = r.read_only
        out["meta"] = {{k: r.meta()[k] for k in ("status", "last_step")}}
        out["scalars"] = r.scalars(["loss"])
        out["json"] = r.json("note")
        out["snapshot"] = r.snapshot("conv1", "a")[1].tolist()
        try:
            r.send_control("pause", True)
        except RunStoreError as err:
            out["send"] = [type(err).__name__, str(err)]
except RunStoreError as err:
    out["error"] = [type(err).__name__, str(err)]
out["listed"] = [(x["name"], x["status"]) for x in list_runs({root!r})]
print(json.dumps(out))
"""


def write_run(path: Path) -> RunWriter:
    w = RunWriter(path, meta={"trainer": "builtin"})
    for step in range(3):
        w.log_scalars(step, {"loss": 1.0 / (step + 1)})
        w.commit(step)
    w.log_json(2, "note", {"hello": "world"})
    w.log_snapshot(2, "conv1", "a", __import__("torch").tensor([[0.5, 1.0], [2.0, 4.0]]))
    w.commit(2)
    return w


def test_finished_run_reads_on_a_read_only_mount(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    write_run(root / "done").close(status="finished")
    assert sorted(p.name for p in (root / "done").iterdir()) == [".writer.lock", "run.sqlite"]
    before = (root / "done" / "run.sqlite").read_bytes()
    out = json.loads(on_read_only_mount(root, PROBE.format(run=str(root / "done"), root=str(root))))
    assert out == {
        "read_only": True,
        "meta": {"status": "finished", "last_step": 2},
        "scalars": {"loss": [[0, 1.0], [1, 0.5], [2, 1 / 3]]},
        "json": [2, {"hello": "world"}],
        "snapshot": [[0.5, 1.0], [2.0, 4.0]],
        "send": ["RunReadOnlyError", f"{root / 'done'} is read-only: a control cannot be queued"],
        "listed": [["done", "finished"]],
    }
    assert (root / "done" / "run.sqlite").read_bytes() == before
    assert sorted(p.name for p in (root / "done").iterdir()) == [".writer.lock", "run.sqlite"]
    with RunReader(root / "done") as r:  # on a writable disk the same run is not read-only
        assert r.read_only is False


def test_a_run_with_unmerged_steps_in_its_wal_says_why_it_cannot_be_read(tmp_path: Path) -> None:
    live = write_run(tmp_path / "live")  # open writer: its steps are still in run.sqlite-wal
    root = tmp_path / "ro"
    (root / "copy").mkdir(parents=True)
    for name in ("run.sqlite", "run.sqlite-wal"):  # a copy taken while it ran, without -shm
        shutil.copy(tmp_path / "live" / name, root / "copy" / name)
    live.close(status="finished")
    assert (root / "copy" / "run.sqlite-wal").stat().st_size > 0
    out = json.loads(on_read_only_mount(root, PROBE.format(run=str(root / "copy"), root=str(root))))
    db = root / "copy" / "run.sqlite"
    assert out["error"] == [
        "RunCorruptError",
        f"{db}: its -wal file holds steps not yet merged into the database and the directory "
        "is read-only; copy the run to a writable place to read it",
    ]
    assert out["listed"][0][:2] == ["copy", "unreadable"]
