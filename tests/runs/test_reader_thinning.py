"""RunReader.scalars(max_points=): the database thins the long series of consecutive steps at one
step stride (k = ceil(n / max_points) of the longest: the steps that are multiples of k, and each
series' first and last), so series logged together keep points at the same steps; a long series
with gaps is `thinned` (every k-th row and the last). Checked against that rule written out on the
whole series, with NaN values, `since` and names; layer_stats(max_points=) is `thinned` per layer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from convscope.runs import RunReader, RunWriter
from convscope.runs.thinning import thinned


def _same(a: dict[str, list[tuple[int, float]]], b: dict[str, list[tuple[int, float]]]) -> bool:
    def key(rows: list[tuple[int, float]]) -> list[tuple[int, str]]:
        return [(s, repr(v)) for s, v in rows]  # nan == nan here

    return a.keys() == b.keys() and all(key(a[k]) == key(b[k]) for k in a)


def _rule(whole: dict[str, list[tuple[int, float]]], max_points: int) -> dict[str, list[tuple[int, float]]]:
    """The thinning rule written out on whole series."""

    def consecutive(v: list[tuple[int, float]]) -> bool:
        return v[-1][0] - v[0][0] + 1 == len(v)

    runs = [len(v) for v in whole.values() if len(v) > max_points and consecutive(v)]
    k = -(-max(runs, default=1) // max_points)
    out = {}
    for name, v in whole.items():
        if len(v) > max_points and consecutive(v):
            out[name] = [(s, x) for s, x in v if s % k == 0 or s in (v[0][0], v[-1][0])]
        else:
            out[name] = thinned(v, max_points)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("thin") / "run"
    w = RunWriter(path)
    for step in range(101):
        row = {"loss": 2.0 - step / 100, "nan_at_7": math.nan if step == 7 else float(step)}
        if step % 3 == 0:
            row["every_3rd"] = float(step)  # gaps: read whole, thinned in Python
        if step not in (40, 41):
            row["missing_two"] = float(-step)
        if step >= 95:
            row["late"] = 1.0  # few points: never thinned
        w.log_scalars(step, row)
        if step % 2 == 0:
            w.log_layer_stats(step, "conv1", {"a_mean": step / 2})
        if step % 5 == 0:
            w.log_layer_stats(step, "fc", {"a_mean": -float(step)})
        w.commit(step)
    w.close()
    return path


@pytest.mark.parametrize("max_points", [1, 2, 3, 7, 10, 33, 34, 100, 101, 1000])
@pytest.mark.parametrize("since", [None, 0, 12, 99, 100])
def test_thinned_in_the_database_is_thinned_of_the_whole(run: Path, max_points: int, since: int | None) -> None:
    r = RunReader(run)
    try:
        whole = r.scalars(since=since)
        expect = _rule(whole, max_points)
        got = r.scalars(since=since, max_points=max_points)
        assert _same(got, expect)
        rows = r.layer_stats(since=since)
        per = {la: [x for x in rows if x["layer"] == la] for la in ("conv1", "fc")}
        kept = [id(x) for v in per.values() for x in thinned(v, max_points)]
        expect_rows = [x for x in rows if id(x) in kept]
        assert r.layer_stats(since=since, max_points=max_points) == expect_rows
        assert r.layer_stats("fc", since=since, max_points=max_points) == thinned(per["fc"], max_points)
        names = ["loss", "every_3rd", "nope"]
        got_named = r.scalars(names=names, since=since, max_points=max_points)
        assert _same(got_named, {n: expect.get(n, []) for n in names})
    finally:
        r.close()


def test_known_answer(run: Path) -> None:
    r = RunReader(run)
    try:
        got = r.scalars(names="loss", max_points=10)["loss"]  # 101 points: k = 11
        assert [s for s, _ in got] == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99, 100]
        assert got[1] == (11, 2.0 - 11 / 100)
        late = r.scalars(since=12, max_points=10)  # loss: steps 13..100 (88): k = 9, one for all
        assert [s for s, _ in late["loss"]] == [13, 18, 27, 36, 45, 54, 63, 72, 81, 90, 99, 100]
        assert [s for s, _ in late["late"]] == [95, 96, 97, 98, 99, 100]  # 6 points: whole
        assert math.isnan(dict(r.scalars(names="nan_at_7", max_points=200)["nan_at_7"])[7])
        assert [s for s, _ in r.scalars(names="every_3rd", max_points=17)["every_3rd"]] == [*range(0, 97, 6), 99]
        assert [x["step"] for x in r.layer_stats("fc", max_points=3)] == [0, 35, 70, 100]  # 21 rows: k = 7
        with pytest.raises(ValueError, match="max_points must be >= 1"):
            r.scalars(max_points=0)
        with pytest.raises(ValueError, match="max_points must be >= 1"):
            r.layer_stats(max_points=0)
    finally:
        r.close()
