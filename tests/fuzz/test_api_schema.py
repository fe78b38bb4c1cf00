"""Schemathesis over the dashboard's own OpenAPI schema, in process: no 500 anywhere, and every
answer matches what its route declares (status, content type, JSON body).

The schema is `create_app(...).openapi()` -- built in the test, not served (the app has no
/openapi.json) -- and requests go straight into the ASGI app, no network. The runs are real: a
few steps of the built-in trainer (`convscope.train.Trainer` on the built-in data), one of them
still live (status running, so controls and uploads get past the status check and are
validated), one finished. The live event stream is left out: it never ends by itself.

Each operation gets positive cases (valid per the schema) and negative ones (values outside it),
a fixed number of each with a fixed seed, so the run is bounded (about 30 s) and reproducible.
Run alone:  .venv/bin/python -m pytest tests/fuzz -q
"""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from convscope.config import ServeConfig, TrainConfig
from convscope.runs import RunReader
from convscope.server import create_app
from convscope.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BASE = "http://127.0.0.1"  # a Host the server answers to; the same Origin for POSTs
HEADERS = {"Host": "127.0.0.1", "Origin": BASE}
SMALL = dict(
    train_size=128, val_size=32, test_images=4, batch_size=8, val_every=2, snapshot_every=0.0
)
EXAMPLES = 20  # per operation and mode: 15 operations x 2 modes x 20 = 600 requests
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def png(value: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """root with "live" (running: 5 steps, an answered upload, a checkpoint) and "done"."""
    root = tmp_path_factory.mktemp("runs")
    Trainer(TrainConfig(**SMALL, steps=3), root / "done").run()  # type: ignore[arg-type]
    live = Trainer(TrainConfig(**SMALL), root / "live")  # type: ignore[arg-type]
    live.recorder.poll_every = 0.0
    # what Trainer.run() does first, then steps by hand so the run stays live (status running)
    live.writer.log_snapshot(live.recorder.step_index, "_test", "input", live.data.xtest)
    live.train_step()
    with RunReader(root / "live") as r:
        r.send_control("predict", {"png_b64": png(200), "name": "grey.png"})
        r.send_control("save_checkpoint", "ck")
    for _ in range(4):
        live.train_step()
    with RunReader(root / "live") as r:
        found = r.json("layers")
        assert found is not None and r.json("upload:1") is not None and r.checkpoints()
        assert r.snapshot_steps("_test", "input") and r.meta()["status"] == "running"
        layers = [str(row["name"]) for row in found[1]]
    try:
        yield root, layers
    finally:
        live.recorder.close("stopped")


def narrowed(raw: dict[str, Any], layers: list[str]) -> dict[str, Any]:
    """The app's schema with `run`, `layer`, `kind`, `norm`, the json `key`, the test image index
    and the upload id drawn from what the fixture runs hold (plus values that are not there), so
    positive cases reach the code behind the 404s; negative cases still try everything else."""
    schema = copy.deepcopy(raw)
    choices = {
        "run": ["live", "done", "nope"],
        "layer": [*layers, "_test", "upload:1/conv1", "nope"],
        "kind": ["x", "conv", "z", "a", "grad_z", "grad_a", "weight", "grad_weight", "input", "q"],
        "norm": ["map", "layer", "global", "q"],
        "key": ["layers", "predictions", "findings", "upload:1", "nope"],
        "index": [0, 3, 4, 65535],  # test images: the runs have 4
        "ident": [1, 2, 2**63 - 1],  # uploads: "live" has upload 1 (answered)
    }
    for path, ops in schema["paths"].items():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["name"] in choices and not (p["name"] == "key" and "json" not in path):
                    kind = "integer" if isinstance(choices[p["name"]][0], int) else "string"
                    p["schema"] = {"type": kind, "enum": choices[p["name"]]}
    return schema


def operations(raw: dict[str, Any], *, with_inputs: bool = False) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation but the live stream (only those that take parameters or
    a body with `with_inputs`: the others have no negative cases)."""
    return [
        (method.upper(), path)
        for path, ops in raw["paths"].items()
        for method, op in ops.items()
        if not path.endswith("/events")
        and (not with_inputs or op.get("parameters") or op.get("requestBody"))
    ]


def test_the_app_serves_no_schema(runs: tuple[Path, list[str]]) -> None:
    """/openapi.json and /docs stay off: the schema is for the tests, not for visitors."""
    root, _ = runs
    from fastapi.testclient import TestClient

    with TestClient(create_app(root, ServeConfig()), base_url=BASE) as c:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert c.get(path).status_code == 404


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI keeps those as wrappers holding
    the original router in recent versions)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is not None:
            yield from api_routes(inner)


def test_every_operation_is_fuzzed() -> None:
    """Every API route (all but the live stream) is in the schema, so the fuzz test reaches it:
    a route left out of the schema would escape the fuzzing."""
    app = create_app(Path("."), ServeConfig())
    routes = {
        (method, route.path)
        for route in api_routes(app.routes)
        if route.path.startswith("/api/")
        for method in route.methods
    }
    fuzzed = set(operations(app.openapi()))
    assert fuzzed == {r for r in routes if not r[1].endswith("/events")}
    assert fuzzed >= {
        ("GET", "/api/runs"), ("GET", "/api/runs/{run}"), ("GET", "/api/runs/{run}/scalars"),
        ("GET", "/api/runs/{run}/stats"), ("GET", "/api/runs/{run}/snapshots"),
        ("GET", "/api/runs/{run}/snapshot-steps"), ("GET", "/api/runs/{run}/json/{key}"),
        ("GET", "/api/runs/{run}/controls"), ("POST", "/api/runs/{run}/controls"),
        ("GET", "/api/runs/{run}/image.png"), ("GET", "/api/runs/{run}/za.png"),
        ("GET", "/api/runs/{run}/test-images/{index}.png"), ("POST", "/api/runs/{run}/uploads"),
        ("GET", "/api/runs/{run}/uploads/{ident}"),
        ("GET", "/api/runs/{run}/uploads/{ident}/image.png"),
    }  # fmt: skip


def fuzz(app: Any, op: Any, mode: GenerationMode) -> set[int]:
    """Run EXAMPLES cases of one operation through the app, checking each answer (CHECKS);
    the status codes seen."""
    codes: set[int] = set()

    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=op.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        res = case.call_and_validate(app=app, base_url=BASE, headers=HEADERS, checks=CHECKS)
        codes.add(res.status_code)

    one()
    return codes


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_against_its_schema(runs: tuple[Path, list[str]], mode: GenerationMode) -> None:
    root, layers = runs
    app = create_app(root, ServeConfig())
    raw = app.openapi()
    schema = schemathesis.openapi.from_dict(narrowed(raw, layers))
    todo = operations(raw, with_inputs=mode == GenerationMode.NEGATIVE)
    seen = {(m, p): fuzz(app, schema[p][m], mode) for m, p in todo}
    assert all(seen.values())  # every operation was called
    if mode == GenerationMode.POSITIVE:  # and the valid cases reached real answers
        assert {p for (_, p), codes in seen.items() if 200 in codes} >= {
            "/api/runs", "/api/runs/{run}", "/api/runs/{run}/scalars", "/api/runs/{run}/stats",
            "/api/runs/{run}/snapshots", "/api/runs/{run}/controls",
        }  # fmt: skip
