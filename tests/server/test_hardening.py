"""Issue 7, the server's part: what a web page can send may not name code (case 1), no number
from a URL or a body can reach a 500 (case 5), and a finished run on a read-only mount is served
read-only (case 7). In process (TestClient) on runs written by RunWriter; full JSON answers."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from runs.romount import on_read_only_mount
from server.fakerun import fixture_writer, write_fixture_run

from convscope.config import ServeConfig
from convscope.runs import RunWriter
from convscope.server import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BASE = "http://127.0.0.1"
HUGE = "9" * 400  # a 400-digit integer
MAX = 2**63 - 1


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[TestClient, RunWriter]]:
    w = fixture_writer(tmp_path, "live")  # a built-in trainer's run, status running
    with TestClient(
        create_app(tmp_path, ServeConfig()), base_url=BASE, headers={"Origin": BASE}
    ) as c:
        yield c, w
    w.close()


# ---- case 1: the model control names a zoo net or carries a layer spec, never code -------------

NOT_A_NET = (
    "{} is not a zoo net this run's trainer offers (fixture-net, other-net); the dashboard takes "
    "a zoo net or layer-spec text, never an import path"
)
NOT_A_LAYER = "line {}: {} is not a layer (conv, pool, fc, dropout)"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("/some/dir/evil.py:Net", NOT_A_NET.format("'/some/dir/evil.py:Net'")),
        ("evil.py:Net", NOT_A_NET.format("'evil.py:Net'")),
        ("os:abort", NOT_A_NET.format("'os:abort'")),
        ("sys:exit", NOT_A_NET.format("'sys:exit'")),
        ("convscope.models.zoo:TinyVGG", NOT_A_NET.format("'convscope.models.zoo:TinyVGG'")),
        ("zoo:../../evil", NOT_A_NET.format("'zoo:../../evil'")),
        ("zoo:tiny-vgg", NOT_A_NET.format("'zoo:tiny-vgg'")),  # a real zoo net, not one this run's trainer lists
        ("conv 16 5 relu\nfc 10\nos:abort", NOT_A_LAYER.format(3, "'os:abort'")),  # a spec with a code line
        ("fc 10; import os", NOT_A_LAYER.format(1, "'import'")),
        ("conv 16 5 pad 2 relu # ok\nfc builtins.exec", "line 2: fc cannot take 'builtins.exec' (words and whole numbers only)"),
        ("conv 8 3 relu\nbanana 3\nfc 10", NOT_A_LAYER.format(2, "'banana'")),  # the line the user sees
        ("\n# mine\n\nconv 8 3\nfc 10\nbanana", NOT_A_LAYER.format(6, "'banana'")),  # blank and comment lines count
        ("a" * 50, NOT_A_NET.format(repr("a" * 40 + "…"))),
    ],
)
def test_model_control_refuses_anything_but_zoo_names_and_specs(
    live: tuple[TestClient, RunWriter], value: str, error: str
) -> None:
    c, w = live
    res = c.post("/api/runs/live/controls", json={"key": "model", "value": value})
    assert res.status_code == 400
    assert res.json() == {"error": error}
    assert w.poll_controls() == []  # nothing reached the trainer


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "model must be the name of a zoo net or layer-spec text; got null"),
        (3, "model must be the name of a zoo net or layer-spec text; got 3"),
        (["fixture-net"], "model must be the name of a zoo net or layer-spec text; got a list"),
        ({"zoo": "x"}, "model must be the name of a zoo net or layer-spec text; got an object"),
        ("", "model is empty: pick a zoo net or write a layer spec (e.g. 'conv 8 3 relu; pool 2; fc 10')"),
        (" \n\t", "model is empty: pick a zoo net or write a layer spec (e.g. 'conv 8 3 relu; pool 2; fc 10')"),
    ],
)
def test_model_control_needs_text(live: tuple[TestClient, RunWriter], value: Any, error: str) -> None:
    c, w = live
    res = c.post("/api/runs/live/controls", json={"key": "model", "value": value})
    assert res.status_code == 400
    assert res.json() == {"error": error}
    assert w.poll_controls() == []


def test_model_control_passes_zoo_names_and_specs(live: tuple[TestClient, RunWriter]) -> None:
    c, w = live
    spec = "conv 4 3 pad 1 relu\npool 2\ndropout 0.25\nfc 3"
    for value, ident in (("fixture-net", 1), ("zoo:other-net", 2), (spec, 3), ("fc 3", 4)):
        res = c.post("/api/runs/live/controls", json={"key": "model", "value": value})
        assert (res.status_code, res.json()) == (200, {"id": ident})
    sent = [(x.key, x.value) for x in w.poll_controls()]
    assert sent == [
        ("model", "fixture-net"),
        ("model", "other-net"),
        ("model", spec),
        ("model", "fc 3"),
    ]


def test_a_forged_zoo_list_cannot_whitelist_code(tmp_path: Path) -> None:
    """meta "zoo" comes from the store: an entry that is not a plain name is never accepted."""
    w = RunWriter(tmp_path / "forged", meta={"trainer": "builtin", "status": "running",
                                             "zoo": ["os:abort", "/x/evil.py:Net", "tiny-vgg"]})  # fmt: skip
    w.commit(0)
    with TestClient(create_app(tmp_path, ServeConfig()), base_url=BASE) as c:
        res = c.post("/api/runs/forged/controls", json={"key": "model", "value": "os:abort"})
        assert res.status_code == 400 and "(tiny-vgg)" in res.json()["error"]
        ok = c.post("/api/runs/forged/controls", json={"key": "model", "value": "tiny-vgg"})
        assert ok.json() == {"id": 1}
    assert [(x.key, x.value) for x in w.poll_controls()] == [("model", "tiny-vgg")]
    w.close()


# ---- case 5: numbers are range-checked at the edge ------------------------------------------------


def range_error(name: str, lo: int, hi: int) -> dict[str, str]:
    return {"error": f"{name}: must be an integer in {lo}..{hi}"}


@pytest.mark.parametrize(
    ("path", "params", "answer"),
    [
        ("/api/runs/live/scalars", {"since": HUGE}, range_error("since", -1, MAX)),
        (
            "/api/runs/live/scalars",
            {"since": "99999999999999999999999"},
            range_error("since", -1, MAX),
        ),
        ("/api/runs/live/scalars", {"since": str(MAX + 1)}, range_error("since", -1, MAX)),
        ("/api/runs/live/scalars", {"since": "-2"}, range_error("since", -1, MAX)),
        ("/api/runs/live/scalars", {"since": "1.5"}, range_error("since", -1, MAX)),
        ("/api/runs/live/scalars", {"max_points": HUGE}, range_error("max_points", 2, 1_000_000)),
        ("/api/runs/live/scalars", {"max_points": "1"}, range_error("max_points", 2, 1_000_000)),
        ("/api/runs/live/stats", {"since": HUGE}, range_error("since", -1, MAX)),
        ("/api/runs/live/stats", {"max_points": "-7"}, range_error("max_points", 2, 1_000_000)),
        ("/api/runs/live/json/layers", {"step": HUGE}, range_error("step", 0, MAX)),
        ("/api/runs/live/json/layers", {"step": "-1"}, range_error("step", 0, MAX)),
        ("/api/runs/live/controls", {"since_id": HUGE}, range_error("since_id", 0, MAX)),
        ("/api/runs/live/controls", {"since_id": "-1"}, range_error("since_id", 0, MAX)),
        (
            "/api/runs/live/image.png",
            {"layer": "conv1", "kind": "a", "step": HUGE},
            range_error("step", 0, MAX),
        ),
        (
            "/api/runs/live/image.png",
            {"layer": "conv1", "kind": "a", "sample": HUGE},
            range_error("sample", 0, 65535),
        ),
        (
            "/api/runs/live/image.png",
            {"layer": "conv1", "kind": "a", "sample": "-1"},
            range_error("sample", 0, 65535),
        ),
        ("/api/runs/live/za.png", {"layer": "conv1", "step": HUGE}, range_error("step", 0, MAX)),
        (
            "/api/runs/live/za.png",
            {"layer": "conv1", "sample": HUGE},
            range_error("sample", 0, 65535),
        ),
        (
            "/api/runs/live/uploads/" + HUGE,
            {},
            {"error": f"path.ident: upload id must be an integer in 1..{MAX}"},
        ),
        (
            "/api/runs/live/uploads/0",
            {},
            {"error": f"path.ident: upload id must be an integer in 1..{MAX}"},
        ),
        (
            "/api/runs/live/uploads/" + HUGE + "/image.png",
            {},
            {"error": f"path.ident: upload id must be an integer in 1..{MAX}"},
        ),
        (
            "/api/runs/live/test-images/" + HUGE + ".png",
            {},
            {"error": "path.index: test image index must be an integer in 0..65535"},
        ),
    ]
    + [
        (
            "/api/runs/live/image.png",
            {"layer": "conv1", "kind": "a", "norm": "global", "scale": s},
            {"error": "scale: must be a number with 0 < scale <= 3.4e+38"},
        )
        for s in ("1e308", "1e999", "nan", "-1", "0", HUGE)
    ],
)
def test_numbers_in_urls_out_of_range_are_400(
    live: tuple[TestClient, RunWriter], path: str, params: dict[str, str], answer: dict[str, str]
) -> None:
    c, _ = live
    res = c.get(path, params=params)
    assert (res.status_code, res.json()) == (400, answer)


def test_numbers_at_the_edges_of_their_ranges_are_served(
    live: tuple[TestClient, RunWriter],
) -> None:
    c, _ = live
    assert c.get("/api/runs/live/scalars", params={"since": MAX}).json() == {
        "last_step": 2,
        "scalars": {},
    }
    assert (
        c.get("/api/runs/live/stats", params={"since": -1, "max_points": 1_000_000}).status_code
        == 200
    )
    assert c.get("/api/runs/live/controls", params={"since_id": MAX}).json() == {"controls": []}
    res = c.get("/api/runs/live/image.png", params={"layer": "conv1", "kind": "a", "step": MAX})
    assert (res.status_code, res.headers["x-step"]) == (200, "2")
    res = c.get("/api/runs/live/uploads/" + str(MAX))
    assert (res.status_code, res.json()) == (404, {"error": f"no upload {MAX} in run 'live'"})
    res = c.get("/api/runs/live/json/layers", params={"step": MAX})
    assert (res.status_code, res.json()["step"]) == (200, 0)
    res = c.get("/api/runs/live/scalars", params={"names": ",".join(f"s{i}" for i in range(257))})
    assert (res.status_code, res.json()) == (
        400,
        {"error": "names lists 257 scalars; at most 256 at once"},
    )


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("lr", int(HUGE), "lr must be 0 < lr <= 10; got an integer of 400 digits"),
        ("lr", -int(HUGE), "lr must be 0 < lr <= 10; got an integer of 400 digits"),
        ("lr", 1e308, "lr must be 0 < lr <= 10; got 1e+308"),
        ("lr", 10.5, "lr must be 0 < lr <= 10; got 10.5"),
        (
            "batch_size",
            int(HUGE),
            "batch_size must be an integer in 1..4096; got an integer of 400 digits",
        ),
        (
            "batch_size",
            2**53 + 1,
            "batch_size must be an integer in 1..4096; got an integer of 16 digits",
        ),
        (
            "weight_decay",
            int(HUGE),
            "weight_decay must be 0 <= weight_decay <= 1; got an integer of 400 digits",
        ),
        ("weight_decay", 1e308, "weight_decay must be 0 <= weight_decay <= 1; got 1e+308"),
        ("weight_decay", 1.5, "weight_decay must be 0 <= weight_decay <= 1; got 1.5"),
        ("momentum", int(HUGE), "momentum must be 0 <= momentum < 1; got an integer of 400 digits"),
    ],
)
def test_numbers_in_control_bodies_out_of_range_are_400(
    live: tuple[TestClient, RunWriter], key: str, value: Any, error: str
) -> None:
    c, w = live
    body = json.dumps({"key": key, "value": value})  # Python's json writes big ints in full
    res = c.post(
        "/api/runs/live/controls", content=body, headers={"content-type": "application/json"}
    )
    assert (res.status_code, res.json()) == (400, {"error": error})
    assert w.poll_controls() == []


def test_control_numbers_at_their_bounds_pass(live: tuple[TestClient, RunWriter]) -> None:
    c, w = live
    for key, value in (("lr", 10), ("weight_decay", 1), ("batch_size", 4096), ("momentum", 0)):
        assert (
            c.post("/api/runs/live/controls", json={"key": key, "value": value}).status_code == 200
        )
    assert [(x.key, x.value) for x in w.poll_controls()] == [
        ("lr", 10.0), ("weight_decay", 1.0), ("batch_size", 4096), ("momentum", 0.0),
    ]  # fmt: skip


# ---- case 7: a finished run on a read-only mount is served read-only ---------------------------

RO_CLIENT = r"""
import json, sys
from fastapi.testclient import TestClient
from convscope.config import ServeConfig
from convscope.server import create_app
from convscope.runs import RunReader
root = sys.argv[1] if len(sys.argv) > 1 else {root!r}
out = {{}}
with RunReader(root + "/fix") as r:
    out["read_only"] = r.read_only
with TestClient(create_app(__import__("pathlib").Path(root), ServeConfig()),
                base_url="http://127.0.0.1", headers={{"Origin": "http://127.0.0.1"}}) as c:
    for name, path in {paths!r}:
        res = c.get(path)
        body = res.json() if res.headers["content-type"] == "application/json" else len(res.content)
        out[name] = [res.status_code, res.headers["content-type"], body]
    for key in ("pause", "lr"):
        res = c.post("/api/runs/fix/controls", json={{"key": key, "value": 0.1}})
        out["post " + key] = [res.status_code, res.json()]
    res = c.post("/api/runs/fix/uploads", files={{"image": ("a.png", b"x", "image/png")}})
    out["upload"] = [res.status_code, res.json()]
print(json.dumps(out))
"""

RO_PATHS = [
    ("runs", "/api/runs"),
    ("run", "/api/runs/fix"),
    ("scalars", "/api/runs/fix/scalars?since=0&names=loss"),
    ("stats", "/api/runs/fix/stats?layer=fc&since=1"),
    ("snapshots", "/api/runs/fix/snapshots"),
    ("snapshot-steps", "/api/runs/fix/snapshot-steps?layer=conv1&kind=a"),
    ("image", "/api/runs/fix/image.png?layer=conv1&kind=a"),
    ("za", "/api/runs/fix/za.png?layer=conv1"),
    ("test-image", "/api/runs/fix/test-images/1.png"),
    ("json", "/api/runs/fix/json/findings"),
    ("controls", "/api/runs/fix/controls"),
    ("upload 1", "/api/runs/fix/uploads/1"),
    ("page", "/"),
]


def test_finished_run_on_a_read_only_mount_is_served_read_only(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    run = write_fixture_run(root, "fix")  # finished: RunWriter.close leaves no -wal/-shm
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}
    assert sorted(before) == [".writer.lock", "run.sqlite"]
    with TestClient(create_app(root, ServeConfig()), base_url=BASE) as c:  # the same, writable
        expected = {name: c.get(path) for name, path in RO_PATHS}
    for p in run.iterdir():  # the writable pass may have left -wal/-shm: a clean copy again
        if p.name.endswith(("-wal", "-shm")):
            p.unlink()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}
    mtime = os.stat(run / "run.sqlite").st_mtime_ns

    out = json.loads(on_read_only_mount(root, RO_CLIENT.format(root=str(root), paths=RO_PATHS)))

    assert out.pop("read_only") is True
    read_only = (
        "this run is read-only (its directory cannot be written): it can be viewed, not controlled"
    )
    assert out.pop("post pause") == [409, {"error": read_only}]
    assert out.pop("post lr") == [409, {"error": read_only}]
    assert out.pop("upload") == [409, {"error": read_only}]
    for name, _ in RO_PATHS:  # every GET answers as it does on a writable directory
        want = expected[name]
        body = (
            want.json() if want.headers["content-type"] == "application/json" else len(want.content)
        )
        if name == "run":
            assert out[name][2]["status"] == "finished"
        assert out[name] == [want.status_code, want.headers["content-type"], body], name
    assert expected["upload 1"].status_code == 404 and expected["image"].status_code == 200
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}
    assert after == before and os.stat(run / "run.sqlite").st_mtime_ns == mtime


# ---- a request body is bounded before it is parsed (the upload route bounds its own) ----------

TOO_BIG = {"error": "request body over the limit of 262,144 bytes (controls and requests are small JSON)"}


@pytest.mark.parametrize("path", ["/api/runs/live/controls", "/api/runs/live/projections", "/api/runs/nope/units"])
def test_a_json_body_over_the_limit_is_413_before_it_is_read(
    live: tuple[TestClient, RunWriter], path: str
) -> None:
    c, w = live
    body = json.dumps({"key": "pause", "value": "x" * 300_000}).encode()
    res = c.post(path, content=body, headers={"content-type": "application/json"})
    assert (res.status_code, res.json()) == (413, TOO_BIG)

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it is read
        yield b'{"key": "pause", "value": "'
        for _ in range(40):
            yield b"x" * 8192
        yield b'"}'

    res = c.post(path, content=chunked(), headers={"content-type": "application/json"})
    assert "content-length" not in res.request.headers
    assert (res.status_code, res.json()) == (413, TOO_BIG)
    assert w.poll_controls() == []


def test_a_body_at_the_limit_reaches_the_route(live: tuple[TestClient, RunWriter]) -> None:
    c, w = live
    spec = "conv 16 5 pad 2 relu\n" * 900 + "fc 10"  # 18,905 characters: under MAX_SPEC_CHARS
    body = json.dumps({"key": "model", "value": spec, "pad": "é" * 20_000}, ensure_ascii=True)
    assert len(body) < 262_144
    res = c.post("/api/runs/live/controls", content=body, headers={"content-type": "application/json"})
    assert res.status_code != 413
    chunks = [b'{"key": "pause", ', b'"value": true}']
    res = c.post("/api/runs/live/controls", content=iter(chunks), headers={"content-type": "application/json"})
    assert res.status_code == 200
    assert [x.key for x in w.poll_controls()][-1] == "pause"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("{bad", "the body is not valid JSON (Expecting property name enclosed in double quotes at character 1)"),
        ("", "the body must be a JSON object ({...}); it is empty"),
        ("[1, 2]", "the body must be a JSON object ({...})"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_one_plain_line(
    live: tuple[TestClient, RunWriter], body: str, error: str
) -> None:
    c, w = live
    res = c.post("/api/runs/live/controls", content=body, headers={"content-type": "application/json"})
    assert (res.status_code, res.json()) == (400, {"error": error})
    assert w.poll_controls() == []
