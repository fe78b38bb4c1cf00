"""Pruning: keeps a run within its `Retention` (a cap per snapshot series, a byte budget for the
database) inside the writer's transaction, before the new rows go in, so run.sqlite's pages in use
never pass the budget (SQLite reuses the freed pages in the same transaction).

    p = Pruner(Retention(budget_bytes=10**9)); p.load(conn)        # per-series counts and bytes
    skip = p.prune(conn, {("conv1", "weight"): [(120, 73_000)]}, other_bytes=4_000)
    # -> the incoming (layer, kind, step) rows not to insert (already thinned away); p.note is the
    #    meta "thinned" JSON to write when something was dropped, else None

Only snapshots are ever dropped, and of every series at least its newest step stays. What was
dropped is said in meta "thinned": {"over_budget": bool, "series": [{"layer", "kind", "dropped",
"by_retention", "by_budget"}]} (over_budget: even one snapshot per series plus the
scalars and stats do not fit). A series is thinned with `Retention.select` past its cap and
`Retention.select_n` to fit the budget (log-spaced back in time, the newest kept).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping

from convscope.runs.retention import Retention, share_cuts
from convscope.runs.schema import PAGE_SIZE, used_bytes

Series = tuple[str, str]  # (layer, kind)
SLACK = 0.02  # budget thinning frees this share of the budget beyond what is needed (hysteresis)
ROUNDS = 4  # thinning rounds per transaction (bytes freed are measured after each)
MARGIN = 4 * PAGE_SIZE  # b-tree and index pages a transaction's inserts may add beyond their rows
_USABLE = PAGE_SIZE - 4  # bytes of a payload per overflow page
_LOCAL_MAX = PAGE_SIZE - 35  # a row this small stays in its b-tree leaf
_LOCAL_MIN = (
    PAGE_SIZE - 12
) * 32 // 255 - 23  # else this much stays in the leaf, the rest overflows


def row_bytes(blob: int) -> int:
    """Database bytes a snapshot row of a `blob`-byte payload takes (SQLite's overflow rule; rows
    that stay in a leaf share its page, appended rows fill pages), plus its key columns and index
    entry: what inserting it costs and deleting it gives back, roughly."""
    payload = blob + 64
    if payload <= _LOCAL_MAX:
        per_page = max(1, (PAGE_SIZE - 8) // (payload + 12))  # cells and their pointers
        return PAGE_SIZE // per_page + 48
    local = _LOCAL_MIN + (payload - _LOCAL_MIN) % _USABLE
    if local > _LOCAL_MAX:
        local = _LOCAL_MIN
    return local + 48 + math.ceil((payload - local) / _USABLE) * PAGE_SIZE


class Pruner:
    """Per-series snapshot counts and bytes, kept in step with the database by the writer thread."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.series: dict[Series, list[int]] = {}  # [count, row bytes]
        self.dropped: dict[Series, dict[str, int]] = {}  # {"retention": n, "budget": n}
        self.over_budget = False
        self.note: str | None = None  # meta "thinned" to write in this transaction

    def load(self, conn: sqlite3.Connection) -> None:
        """Read the counts from the database (at open, and after a failed transaction)."""
        self.series = {}
        for layer, kind, size in conn.execute("SELECT layer, kind, length(data) FROM snapshots"):
            entry = self.series.setdefault((layer, kind), [0, 0])
            entry[0] += 1
            entry[1] += row_bytes(size)
        row = conn.execute("SELECT value FROM meta WHERE key = 'thinned'").fetchone()
        self.dropped, self.over_budget = {}, False
        if row is not None:
            note = json.loads(row[0])
            self.over_budget = bool(note.get("over_budget"))
            for s in note.get("series", []):
                self.dropped[(s["layer"], s["kind"])] = {
                    "retention": int(s["by_retention"]),
                    "budget": int(s["by_budget"]),
                }

    def prune(
        self,
        conn: sqlite3.Connection,
        incoming: Mapping[Series, list[tuple[int, int]]],
        other_bytes: int,
    ) -> set[tuple[str, str, int]]:
        """Thin what the transaction's new rows (`incoming`: series -> [(step, blob bytes)], plus
        `other_bytes` of scalars, stats and JSON) would take past the cap or the budget. Returns the
        incoming rows not to insert; sets `note` when anything was dropped."""
        self.note = None
        skip: set[tuple[str, str, int]] = set()
        new = {s: list(rows) for s, rows in incoming.items()}
        cap = self.retention.max_snapshots_per_series
        for series, rows in new.items():
            if self._count(series) + len(rows) > cap:
                self._thin(conn, series, new, skip, None)
        budget = self.retention.budget_bytes
        over = False
        for _ in range(ROUNDS):
            coming = MARGIN + other_bytes + sum(row_bytes(b) for rows in new.values() for _, b in rows)
            need = used_bytes(conn) + coming - budget
            over = need > 0
            if not over:
                break
            sizes = {s: self._totals(s, new.get(s, [])) for s in self.series.keys() | new.keys()}
            cuts = share_cuts(sizes, need + int(SLACK * budget))
            if not cuts:
                break  # one snapshot per series is all that is left
            for series, keep in cuts.items():
                self._thin(conn, series, new, skip, keep)
        if over != self.over_budget:
            self.over_budget = over
            self._say()
        for series, rows in new.items():
            entry = self.series.setdefault(series, [0, 0])
            entry[0] += len(rows)
            entry[1] += sum(row_bytes(b) for _, b in rows)
        return skip

    def _count(self, series: Series) -> int:
        return self.series.get(series, [0, 0])[0]

    def _totals(self, series: Series, rows: list[tuple[int, int]]) -> tuple[int, int]:
        count, nbytes = self.series.get(series, [0, 0])
        return count + len(rows), nbytes + sum(row_bytes(b) for _, b in rows)

    def _thin(
        self,
        conn: sqlite3.Connection,
        series: Series,
        new: dict[Series, list[tuple[int, int]]],
        skip: set[tuple[str, str, int]],
        keep_n: int | None,
    ) -> None:
        """Thin one series (stored rows and this transaction's new ones) by the cap's rule
        (`keep_n` None) or down to `keep_n` snapshots for the budget."""
        stored = dict(conn.execute(
            "SELECT step, length(data) FROM snapshots WHERE layer = ? AND kind = ?", series
        ).fetchall())  # fmt: skip
        rows = new.get(series, [])
        steps = [*stored, *(s for s, _ in rows)]
        kept = set(
            self.retention.select(steps)
            if keep_n is None
            else self.retention.select_n(steps, keep_n)
        )
        gone = [s for s in stored if s not in kept]
        conn.executemany(
            "DELETE FROM snapshots WHERE layer = ? AND kind = ? AND step = ?",
            [(*series, s) for s in gone],
        )
        new[series] = [(s, b) for s, b in rows if s in kept]
        skip.update((*series, s) for s, _ in rows if s not in kept)
        lost = len(gone) + len(rows) - len(new[series])
        left = {s: b for s, b in stored.items() if s in kept}
        self.series[series] = [len(left), sum(row_bytes(b) for b in left.values())]
        if lost:
            why = "retention" if keep_n is None else "budget"
            self.dropped.setdefault(series, {"retention": 0, "budget": 0})[why] += lost
            self._say()

    def _say(self) -> None:
        rows = [
            {"layer": layer, "kind": kind, "dropped": d["retention"] + d["budget"],
             "by_retention": d["retention"], "by_budget": d["budget"]}
            for (layer, kind), d in sorted(self.dropped.items())
        ]  # fmt: skip
        self.note = json.dumps({"over_budget": self.over_budget, "series": rows})
