"""The dashboard's JSON and PNG API, in process (FastAPI's TestClient), on runs written by
RunWriter with known values: status codes, content types, full JSON, exact pixels, 4xx."""

from __future__ import annotations

import base64
import io
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from server.fakerun import (
    CONFIG,
    FINDINGS,
    LAYERS,
    META,
    PREDICTIONS,
    fixture_writer,
    sample_images,
    scalars_of,
    stats_of,
    weight_of,
    write_fixture_run,
    z_of,
)

from convscope.config import ServeConfig
from convscope.render import filters, grid
from convscope.runs import RunReader, RunWriter
from convscope.server import create_app
from convscope.server.pictures import za_png

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BASE = "http://127.0.0.1"  # a Host the server answers to, and its own Origin (for POSTs)


def local_client(app: Any) -> TestClient:
    """A TestClient that talks as the page does: loopback Host, the page's own Origin."""
    return TestClient(app, base_url=BASE, headers={"Origin": BASE})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runs")
    write_fixture_run(path, "fix")
    return path


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    with local_client(create_app(root, ServeConfig())) as c:
        yield c


def meta_of(path: Path) -> dict[str, Any]:
    with RunReader(path) as r:
        return r.meta()


def pages_in_use(path: Path) -> int:
    """Bytes of run.sqlite's pages in use, read with plain sqlite3 (the oracle of "size.bytes")."""
    conn = sqlite3.connect(f"{(path / 'run.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        (n,), (free,), (size,) = (conn.execute(f"PRAGMA {p}").fetchone() for p in ("page_count", "freelist_count", "page_size"))
    finally:
        conn.close()
    return int((n - free) * size)


def png_array(body: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(body))
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB"))


def error_of(res: Any, status: int) -> str:
    assert res.status_code == status, res.text
    assert res.headers["content-type"] == "application/json"
    body = res.json()
    assert (
        list(body) == ["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    )
    return str(body["error"])


# ---- JSON ---------------------------------------------------------------------------------------


def test_runs_list(client: TestClient, root: Path) -> None:
    res = client.get("/api/runs")
    assert res.status_code == 200 and res.headers["content-type"] == "application/json"
    created = meta_of(root / "fix")["created"]
    assert res.json() == {"runs": [{"name": "fix", "status": "finished", "last_step": 2,
                                    "model": "zoo:fixture-net", "created": created, "error": None}]}  # fmt: skip


def test_run_summary(client: TestClient, root: Path) -> None:
    m = meta_of(root / "fix")
    res = client.get("/api/runs/fix")
    assert res.status_code == 200
    files = [root / "fix" / n for n in ("run.sqlite", "run.sqlite-wal")]
    assert res.json() == {
        "name": "fix",
        "meta": {
            **META,
            "status": "finished",
            "last_step": 2,
            "schema_version": 1,
            "created": m["created"],
            "updated": m["updated"],
            "budget_bytes": 10**9,  # the default byte budget
        },
        "config": CONFIG,
        "layers": LAYERS,
        "layers_step": 0,
        "last_step": 2,
        "status": "finished",
        "stale": False,
        "checkpoints": [],
        "has_test_images": True,
        "size": {"bytes": pages_in_use(root / "fix"), "budget_bytes": 10**9, "over_budget": False,
                 "file_bytes": sum(f.stat().st_size for f in files if f.exists()), "thinned": []},
    }


def test_scalars_all_since_and_names(client: TestClient) -> None:
    full = client.get("/api/runs/fix/scalars").json()
    expected = {k: [[s, scalars_of(s)[k]] for s in range(3)] for k in scalars_of(0)}
    assert full == {"last_step": 2, "scalars": {**expected, "val_acc": [[2, 0.5]]}}
    part = client.get("/api/runs/fix/scalars", params={"since": 0, "names": "loss,val_acc,nope"})
    assert part.json() == {
        "last_step": 2,
        "scalars": {"loss": [[1, 1.5], [2, 1.0]], "val_acc": [[2, 0.5]], "nope": []},
    }


def test_long_histories_thinned(client: TestClient) -> None:
    res = client.get("/api/runs/fix/scalars", params={"names": "loss", "max_points": 2})
    assert res.json()["scalars"] == {"loss": [[0, 2.0], [2, 1.0]]}  # every 2nd, last kept
    rows = client.get("/api/runs/fix/stats", params={"max_points": 2}).json()["stats"]
    assert [(r["step"], r["layer"]) for r in rows] == [
        (0, "conv1"),
        (0, "fc"),
        (2, "conv1"),
        (2, "fc"),
    ]
    assert "max_points" in error_of(
        client.get("/api/runs/fix/stats", params={"max_points": 1}), 400
    )


def test_layer_stats_since_and_layer(client: TestClient) -> None:
    res = client.get("/api/runs/fix/stats", params={"since": 1})
    assert res.json() == {
        "last_step": 2,
        "stats": [{"step": 2, "layer": n, **stats_of(2, n)} for n in ("conv1", "fc")],
    }
    one = client.get("/api/runs/fix/stats", params={"layer": "fc"}).json()["stats"]
    assert one == [{"step": s, "layer": "fc", **stats_of(s, "fc")} for s in range(3)]


def test_snapshot_index_and_steps(client: TestClient) -> None:
    assert client.get("/api/runs/fix/snapshots").json() == {
        "steps": [0, 2],
        "series": {
            "conv1": {
                k: [0, 2, 2] for k in ("a", "grad_a", "grad_weight", "grad_z", "weight", "x", "z")
            },
            "fc": {k: [0, 2, 2] for k in ("a", "weight", "z")},
        },
    }
    res = client.get("/api/runs/fix/snapshot-steps", params={"layer": "conv1", "kind": "weight"})
    assert res.json() == {"layer": "conv1", "kind": "weight", "steps": [0, 2]}


def test_json_values(client: TestClient) -> None:
    assert client.get("/api/runs/fix/json/predictions").json() == {
        "key": "predictions", "step": 2, "value": PREDICTIONS,
    }  # fmt: skip
    assert client.get("/api/runs/fix/json/findings").json() == {
        "key": "findings", "step": 2, "value": FINDINGS,
    }  # fmt: skip
    assert "no json 'findings' at or before step 1" in error_of(
        client.get("/api/runs/fix/json/findings", params={"step": 1}), 404
    )


def test_nan_becomes_null_not_a_500(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "nan", meta={"trainer": "watch"})
    w.log_scalars(0, {"loss": math.nan, "acc": 0.5})
    w.log_layer_stats(0, "conv1", {"a_max": math.inf})
    w.commit(0)
    w.close()
    with local_client(create_app(tmp_path, ServeConfig())) as c:
        assert c.get("/api/runs/nan/scalars").json()["scalars"] == {
            "loss": [[0, None]],
            "acc": [[0, 0.5]],
        }
        assert c.get("/api/runs/nan/stats").json()["stats"] == [
            {"step": 0, "layer": "conv1", "a_max": None}
        ]


# ---- pictures -----------------------------------------------------------------------------------


def test_activation_png_is_render_grid_of_the_snapshot(client: TestClient) -> None:
    res = client.get("/api/runs/fix/image.png", params={"layer": "conv1", "kind": "a", "step": 0})
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert res.headers["x-step"] == "0" and "immutable" in res.headers["cache-control"]
    expected = grid(z_of(0).clamp_min(0), norm="map").array  # exact in float16: same tensor
    assert np.array_equal(png_array(res.content), expected)


def test_latest_and_at_or_before(client: TestClient) -> None:
    res = client.get(
        "/api/runs/fix/image.png", params={"layer": "conv1", "kind": "z", "norm": "layer"}
    )
    assert res.headers["x-step"] == "2" and res.headers["cache-control"] == "no-cache"
    assert np.array_equal(png_array(res.content), grid(z_of(2), signed=True, norm="layer").array)
    res = client.get("/api/runs/fix/image.png", params={"layer": "conv1", "kind": "z", "step": 1})
    assert res.headers["x-step"] == "0" and res.headers["cache-control"] == "no-cache"


def test_filters_png_first_layer_in_colour(client: TestClient) -> None:
    res = client.get(
        "/api/runs/fix/image.png", params={"layer": "conv1", "kind": "weight", "step": 2}
    )
    arr = png_array(res.content)
    assert np.array_equal(arr, filters(weight_of(2), norm="map").array)
    assert (np.abs(arr[..., 0].astype(int) - arr[..., 1]) > 30).any()  # colour, not grey


def test_global_norm_uses_one_scale_for_the_net(client: TestClient) -> None:
    res = client.get("/api/runs/fix/image.png",
                     params={"layer": "fc", "kind": "a", "step": 2, "norm": "global"})  # fmt: skip
    m = float(z_of(2).clamp_min(0).abs().max())  # conv1's a is the largest a at step 2
    fa = torch.tensor([[-1.0, 0.5, 2.0]]) * 3
    assert np.array_equal(
        png_array(res.content), grid(fa, norm="global", scale=m, dense=True).array
    )
    given = client.get("/api/runs/fix/image.png",
                       params={"layer": "fc", "kind": "a", "step": 2, "norm": "global", "scale": 6})  # fmt: skip
    assert np.array_equal(
        png_array(given.content), grid(fa, norm="global", scale=6, dense=True).array
    )


def test_za_png_one_scale(client: TestClient) -> None:
    res = client.get("/api/runs/fix/za.png", params={"layer": "conv1", "step": 2})
    assert res.status_code == 200 and res.headers["x-step"] == "2"
    assert np.array_equal(png_array(res.content), png_array(za_png(z_of(2), z_of(2).clamp_min(0))))


def test_test_image_png(client: TestClient) -> None:
    res = client.get("/api/runs/fix/test-images/1.png")
    arr = png_array(res.content)  # 8x8 scaled up 12x (96 px) without blur
    assert arr.shape == (96, 96, 3)
    x = sample_images()[1]
    want = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(arr[::12, ::12], want)
    error_of(client.get("/api/runs/fix/test-images/2.png"), 404)


def test_picture_cache_is_used(client: TestClient) -> None:
    cache = client.app.state.dash.pictures  # type: ignore[attr-defined]
    params = {"layer": "conv1", "kind": "grad_a", "step": 2}
    first = client.get("/api/runs/fix/image.png", params=params).content
    hits = cache.hits
    assert client.get("/api/runs/fix/image.png", params=params).content == first
    assert cache.hits == hits + 1


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/api/runs/nope", {}, 404, "no run named 'nope'"),
        ("/api/runs/.hidden", {}, 404, "no run"),
        ("/api/runs/a%2Fb", {}, 404, "no"),
        ("/api/runs/nope/image.png", {"layer": "conv1", "kind": "a"}, 404, "no run"),
        ("/api/runs/fix/image.png", {"layer": "conv1", "kind": "zz"}, 400, "unknown kind"),
        (
            "/api/runs/fix/image.png",
            {"layer": "conv1", "kind": "a", "norm": "all"},
            400,
            "norm must be",
        ),
        ("/api/runs/fix/image.png", {"layer": "conv9", "kind": "a"}, 404, "no 'a' snapshot"),
        (
            "/api/runs/fix/image.png",
            {"layer": "conv1", "kind": "a", "step": -1},
            400,
            "step: must be an integer in 0..9223372036854775807",
        ),
        (
            "/api/runs/fix/image.png",
            {"layer": "conv1", "kind": "a", "sample": 3},
            400,
            "out of range",
        ),
        (
            "/api/runs/fix/image.png",
            {"layer": "conv1", "kind": "a", "scale": 2},
            400,
            "norm=global",
        ),
        ("/api/runs/fix/image.png", {"layer": "conv1", "kind": "a", "step": "x"}, 400, "step"),
        ("/api/runs/fix/image.png", {"kind": "a"}, 400, "layer"),
        ("/api/runs/fix/scalars", {"since": -5}, 400, "since"),
        ("/api/nothing", {}, 404, "no such page"),
    ],
)
def test_bad_requests(
    client: TestClient, path: str, params: dict[str, Any], status: int, words: str
) -> None:
    assert words in error_of(client.get(path, params=params), status)


# ---- controls -----------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[TestClient, RunWriter]]:
    w = fixture_writer(tmp_path, "live")
    fixture_writer(tmp_path, "watched", trainer="watch").close(status="stopped")
    watched = RunWriter(tmp_path / "watched", resume=True)  # a live convscope.watch run
    watched.set_meta("status", "running")
    watched.commit(2)
    with local_client(create_app(tmp_path, ServeConfig(max_upload_bytes=4000))) as c:
        yield c, w
    w.close()
    watched.close()


def test_control_sent_and_listed(live: tuple[TestClient, RunWriter]) -> None:
    c, w = live
    res = c.post("/api/runs/live/controls", json={"key": "lr", "value": 0.01})
    assert res.status_code == 200 and res.json() == {"id": 1}
    assert c.post("/api/runs/live/controls", json={"key": "batch_size", "value": 64}).json() == {
        "id": 2
    }
    assert c.post("/api/runs/live/controls", json={"key": "pause"}).json() == {"id": 3}
    [ctrl] = [x for x in w.poll_controls() if x.id == 1]
    assert (ctrl.key, ctrl.value) == ("lr", 0.01)
    w.ack_control(1, 2, result={"ok": True, "lr": 0.01})
    rows = c.get("/api/runs/live/controls").json()["controls"]
    assert [(r["id"], r["key"], r["value"], r["applied_step"], r["result"]) for r in rows] == [
        (1, "lr", 0.01, 2, {"ok": True, "lr": 0.01}),
        (2, "batch_size", 64, None, None),
        (3, "pause", True, None, None),
    ]
    assert [
        r["id"] for r in c.get("/api/runs/live/controls", params={"since_id": 2}).json()["controls"]
    ] == [3]


BAD_CONTROLS: list[tuple[dict[str, Any], str]] = [
    ({"key": "lr", "value": 0}, "lr must be 0 < lr <= 10; got 0"),
    ({"key": "lr", "value": -1e-3}, "lr must be 0 < lr <= 10; got -0.001"),
    ({"key": "lr", "value": "0.1"}, "lr must be 0 < lr <= 10; got a string"),
    ({"key": "lr", "value": True}, "lr must be 0 < lr <= 10; got a boolean"),
    ({"key": "lr"}, "lr must be 0 < lr <= 10; got null"),
    ({"key": "momentum", "value": 1.0}, "momentum must be 0 <= momentum < 1; got 1.0"),
    ({"key": "momentum", "value": -0.1}, "momentum must be 0 <= momentum < 1"),
    ({"key": "batch_size", "value": 0}, "1..4096"),
    ({"key": "batch_size", "value": 4097}, "1..4096"),
    ({"key": "batch_size", "value": 3.5}, "1..4096"),
    ({"key": "weight_decay", "value": -0.5}, "weight_decay must be 0 <= weight_decay <= 1"),
    ({"key": "explode", "value": 1}, "unknown control 'explode'"),
    ({"key": "predict", "value": {}}, "uploads"),
    ({"key": "model", "value": "  "}, "model is empty: pick a zoo net or write a layer spec"),
    ({"key": "load_checkpoint", "value": "step-9"}, "no checkpoint named 'step-9'"),
    ({"key": "save_checkpoint", "value": "../x"}, "checkpoint name"),
    ({"value": 1}, "unknown control None"),
]


def test_bad_control_values(live: tuple[TestClient, RunWriter]) -> None:
    c, w = live
    for body, words in BAD_CONTROLS:
        assert words in error_of(c.post("/api/runs/live/controls", json=body), 400), body
    assert w.poll_controls() == []  # nothing reached the trainer


def test_controls_refused_by_run_kind(live: tuple[TestClient, RunWriter], root: Path) -> None:
    c, _ = live
    assert "convscope.watch" in error_of(
        c.post("/api/runs/watched/controls", json={"key": "lr", "value": 0.1}), 409
    )
    assert c.post("/api/runs/watched/controls", json={"key": "pause"}).status_code == 200
    with local_client(create_app(root, ServeConfig())) as done:
        assert "finished" in error_of(
            done.post("/api/runs/fix/controls", json={"key": "pause"}), 409
        )
    error_of(
        c.post(
            "/api/runs/live/controls",
            content=b"[1, 2]",
            headers={"content-type": "application/json"},
        ),
        400,
    )
    error_of(
        c.post(
            "/api/runs/live/controls",
            content=b"{oops",
            headers={"content-type": "application/json"},
        ),
        400,
    )


# ---- uploads ------------------------------------------------------------------------------------


def png_bytes(w: int, h: int) -> bytes:
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_resized_and_sent_then_answered(live: tuple[TestClient, RunWriter]) -> None:
    c, w = live
    res = c.post(
        "/api/runs/live/uploads", files={"image": ("cat.png", png_bytes(32, 24), "image/png")}
    )
    assert res.status_code == 200 and res.json() == {"id": 1}
    [ctrl] = w.poll_controls()
    assert ctrl.key == "predict" and ctrl.value["name"] == "cat.png"
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(ctrl.value["png_b64"]))))
    assert sent.shape == (8, 8, 3)  # the run's input_shape [3, 8, 8]
    assert c.get("/api/runs/live/uploads/1").json() == {
        "id": 1, "status": "pending", "step": None, "top": [], "layers": [], "error": None,
    }  # fmt: skip
    assert c.get("/api/runs/live/controls").json()["controls"][0]["value"] == {
        "upload": 1, "png_b64_chars": len(ctrl.value["png_b64"]),
    }  # fmt: skip
    top = [[2, "car", 0.5], [0, "cat", 0.25], [1, "dog", 0.25]]
    w.log_snapshot(2, "upload:1/conv1", "a", torch.ones(1, 4, 8, 8))
    w.log_snapshot(2, "upload:1/conv1", "z", torch.ones(1, 4, 8, 8))
    w.log_json(2, "upload:1", {"top": top, "layers": ["conv1"]})
    w.commit(2)
    w.ack_control(1, 2, result={"ok": True})
    assert c.get("/api/runs/live/uploads/1").json() == {
        "id": 1, "status": "done", "step": 2, "top": top,
        "layers": [{"name": "conv1", "kinds": ["a", "z"]}], "error": None,
    }  # fmt: skip
    img = c.get("/api/runs/live/uploads/1/image.png")
    assert img.status_code == 200 and png_array(img.content).shape == (96, 96, 3)
    maps = c.get("/api/runs/live/image.png", params={"layer": "upload:1/conv1", "kind": "a"})
    assert maps.status_code == 200 and maps.headers["content-type"] == "image/png"


def test_upload_refused_by_the_trainer(live: tuple[TestClient, RunWriter]) -> None:
    c, w = live
    c.post("/api/runs/live/uploads", files={"image": ("a.png", png_bytes(8, 8), "image/png")})
    w.ack_control(1, 2, result={"ok": False, "error": "model is restarting"})
    assert c.get("/api/runs/live/uploads/1").json()["status"] == "failed"
    assert c.get("/api/runs/live/uploads/1").json()["error"] == "model is restarting"
    error_of(c.get("/api/runs/live/uploads/7"), 404)


def test_bad_uploads(live: tuple[TestClient, RunWriter]) -> None:
    c, w = live
    big = png_bytes(8, 8) + b"\0" * 5000
    assert "over the limit" in error_of(
        c.post("/api/runs/live/uploads", files={"image": ("b.png", big, "image/png")}), 413
    )
    huge = b"x" * 200_000
    error_of(c.post("/api/runs/live/uploads", files={"image": ("h.png", huge, "image/png")}), 413)
    corrupt = png_bytes(8, 8)[:60]
    words = error_of(
        c.post("/api/runs/live/uploads", files={"image": ("c.png", corrupt, "image/png")}), 400
    )
    assert "c.png" in words
    assert "not a recognised image" in error_of(
        c.post("/api/runs/live/uploads", files={"image": ("t.txt", b"hello", "text/plain")}), 400
    )
    assert "field named 'image'" in error_of(
        c.post("/api/runs/live/uploads", files={"file": ("a.png", png_bytes(8, 8))}), 400
    )
    error_of(
        c.post(
            "/api/runs/live/uploads", content=png_bytes(8, 8), headers={"content-type": "image/png"}
        ),
        400,
    )
    assert "built-in trainer" in error_of(
        c.post(
            "/api/runs/watched/uploads", files={"image": ("a.png", png_bytes(8, 8), "image/png")}
        ),
        409,
    )
    assert w.poll_controls() == []


# ---- token and config -----------------------------------------------------------------------------


def test_token_required_on_every_request(root: Path) -> None:
    token = "s3cret-token"
    with local_client(create_app(root, ServeConfig(host="0.0.0.0", token=token))) as c:
        for path in (
            "/",
            "/api/runs",
            "/static/js/main.js",
            "/api/runs/fix/events",
            "/api/runs/fix/image.png",
        ):
            assert "needs a token" in error_of(c.get(path), 401)
        assert "wrong token" in error_of(c.get("/api/runs", params={"token": "nope-nope"}), 401)
        assert "wrong token" in error_of(
            c.get("/api/runs", headers={"Authorization": "Bearer x"}), 401
        )
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        c.cookies.clear()
        page = c.get("/", params={"token": token})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert c.get("/static/js/main.js").status_code == 200  # the cookie set above


def test_serve_config_fails_fast() -> None:
    with pytest.raises(ValueError, match="token is required"):
        ServeConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="at least 8"):
        ServeConfig(token="short")
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=70000)
    with pytest.raises(TypeError):
        ServeConfig("127.0.0.1")  # type: ignore[misc]
    with pytest.raises(ValueError, match="not a directory"):
        create_app(Path("/nonexistent/runs"), ServeConfig())


def test_page_and_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "activation map = feature map" in page.text
    for path in ("/static/js/main.js", "/static/style.css", "/static/vendor/uplot/uPlot.iife.min.js",
                 "/static/vendor/uplot/LICENSE"):  # fmt: skip
        assert client.get(path).status_code == 200, path
