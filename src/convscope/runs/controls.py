"""Control rows on the trainer's side: the dashboard's messages not yet answered, and the answer.

    polled, unreadable = pending(conn)        # [Control], ids of rows whose value is not JSON
    acknowledge(conn, 3, step=120, result_text='{"ok": true}', now=time.time())

A control row may have been written by anything (the store is a file): a value that is not
readable JSON (or a 5,000-digit number) is never handed to the trainer; RunWriter answers it
{"ok": false, ...} once. The server's side (`RunReader.send_control`) is in reader.py.
"""

from __future__ import annotations

import json
import sqlite3

from convscope.runs.schema import Control, retry, write_txn

UNREADABLE = {"ok": False, "error": "the control's value is not readable JSON"}


def pending(conn: sqlite3.Connection) -> tuple[list[Control], list[int]]:
    """Unanswered controls, oldest first, and the ids of those whose value cannot be read."""
    rows = retry(
        lambda: conn.execute(
            "SELECT id, key, value, time FROM controls WHERE result IS NULL ORDER BY id"
        ).fetchall(),
        "poll_controls",
    )
    controls, unreadable = [], []
    for i, k, v, t in rows:
        try:
            controls.append(Control(i, k, json.loads(v), t))
        except (ValueError, TypeError, RecursionError):
            unreadable.append(i)
    return controls, unreadable


def acknowledge(
    conn: sqlite3.Connection, control_id: int, *, step: int, result_text: str, now: float
) -> None:
    """Write the answer of control `control_id` (ValueError if answered already or unknown)."""

    def body(c: sqlite3.Connection) -> int:
        cur = c.execute(
            "UPDATE controls SET applied_step = ?, applied_time = ?, result = ? "
            "WHERE id = ? AND result IS NULL",
            (step, now, result_text, control_id),
        )
        if cur.rowcount == 1:
            return 1
        exists = c.execute("SELECT 1 FROM controls WHERE id = ?", (control_id,)).fetchone()
        return 0 if exists else -1

    outcome = retry(lambda: write_txn(conn, body), "ack_control")
    if outcome == 0:
        raise ValueError(f"control {control_id} was already acknowledged")
    if outcome == -1:
        raise ValueError(f"no control with id {control_id}")
