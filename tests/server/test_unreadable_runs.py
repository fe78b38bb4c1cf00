"""A run whose run.sqlite cannot be read (truncated, random bytes, empty, another schema, a
stored value that is not JSON) is answered with one 422 line naming the run's file by the run's
name, logged as one line (no traceback) -- on the JSON routes and on the live events stream, which
must refuse before it starts, not answer 200 with nothing. Other runs are served meanwhile."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server.fakerun import write_fixture_run

from convscope.config import ServeConfig
from convscope.server import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BASE = "http://127.0.0.1"


def _damage(root: Path) -> dict[str, str]:
    """Damaged copies of the fixture run: name -> what its error must say."""
    good = root / "fix" / "run.sqlite"
    cases: dict[str, str] = {}

    def copy(name: str) -> Path:
        (root / name).mkdir()
        shutil.copy(good, root / name / "run.sqlite")
        return root / name / "run.sqlite"

    data = good.read_bytes()
    assert len(data) > 8192
    copy("trunc").write_bytes(data[: len(data) // 2])
    cases["trunc"] = "trunc/run.sqlite"
    copy("random").write_bytes(os.urandom(len(data)))
    cases["random"] = "random/run.sqlite"
    copy("zero").write_bytes(b"")
    cases["zero"] = "zero/run.sqlite is not a convscope run"
    db = copy("notable")
    with sqlite3.connect(db) as c:
        c.execute("DROP TABLE snapshots")
    c.close()
    cases["notable"] = "notable/run.sqlite cannot be read: no such table: snapshots"
    db = copy("badmeta")
    with sqlite3.connect(db) as c:
        c.execute("UPDATE meta SET value = '{not json' WHERE key = 'model'")
    c.close()
    cases["badmeta"] = "badmeta/run.sqlite: meta 'model' is not JSON"
    return cases


@pytest.fixture
def served(tmp_path: Path) -> tuple[TestClient, dict[str, str], Path]:
    write_fixture_run(tmp_path)
    cases = _damage(tmp_path)
    client = TestClient(create_app(tmp_path, ServeConfig()), base_url=BASE)
    return client, cases, tmp_path


READS_NO_SNAPSHOTS = ("/scalars", "/stats")
READS_NO_META = ("/scalars", "/stats", "/snapshots")


@pytest.mark.parametrize("route", ["", "/scalars", "/stats", "/snapshots", "/events"])
def test_an_unreadable_run_is_one_422_line(
    served: tuple[TestClient, dict[str, str], Path], route: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, cases, root = served
    with client, caplog.at_level(logging.WARNING):
        for name, says in cases.items():
            res = client.get(f"/api/runs/{name}{route}")
            if (route in READS_NO_SNAPSHOTS and name == "notable") or (route in READS_NO_META and name == "badmeta"):
                assert res.status_code == 200, (name, route, res.text[:200])  # nothing damaged read
                continue
            assert res.status_code == 422, (name, route, res.status_code, res.text[:200])
            assert res.headers["content-type"] == "application/json"
            error = res.json()["error"]
            assert says in error and "\n" not in error and str(root) not in error, error
        good = client.get(f"/api/runs/fix{route}") if route != "/events" else None
        assert good is None or good.status_code == 200
    assert all(r.exc_info is None for r in caplog.records)  # one line each, no traceback
    unreadable = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert unreadable and all("\n" not in m and str(root) not in m for m in unreadable)


def test_the_run_list_still_lists_them(served: tuple[TestClient, dict[str, str], Path]) -> None:
    client, cases, _ = served
    with client:
        runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(cases) | {"fix"} <= set(runs)
    assert json.dumps(runs["fix"])  # served as usual
