"""A control row written into the store by anything but the server: an unreadable value is refused
once (acknowledged ok: false) and never stops the trainer's polling."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from convscope.runs import RunReader, RunWriter


def test_unreadable_values_are_refused_and_polling_goes_on(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    w.commit(0)
    good = RunReader(tmp_path / "run").send_control("lr", 0.1)
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as conn:
        for value in ("{not json", "9" * 5000, "[" * 100_000):
            conn.execute("INSERT INTO controls (key, value, time) VALUES ('lr', ?, 0)", (value,))
    polled = w.poll_controls()
    assert [(c.id, c.key, c.value) for c in polled] == [(good, "lr", 0.1)]
    w.ack_control(good, 0)
    assert w.poll_controls() == []  # the unreadable ones were answered: not polled again
    with RunReader(tmp_path / "run") as r:
        rows = r._rows("SELECT id, result FROM controls ORDER BY id")
        shown = r.controls()  # what the page gets: unreadable values as null, nothing raised
    assert [c["value"] for c in shown] == [0.1, None, None, None]
    results = [json.loads(res) for _, res in rows]
    assert results[0] == {"ok": True}
    assert results[1:] == [{"ok": False, "error": "the control's value is not readable JSON"}] * 3
    w.close()
