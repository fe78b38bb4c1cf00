"""Occlusion on the dashboard: Zeiler & Fergus's Fig. 7 panels for an uploaded image or a test image,
computed by the side that holds the model (convscope/train/occlusion_live.py; for an ended run the
worker, train/worker.py). The server only checks and queues the request and serves what was stored.

  GET  /api/runs/{run}/occlusion-images        what can be occluded: {"uploads": [{id, name}], "tests": N}
  POST /api/runs/{run}/occlusions  {"upload": ID | "test": K, "layer"?, "window"?, "stride"?, "target"?}
                                               → {"id"} (a control row `occlude`)
  GET  /api/runs/{run}/occlusions/{id}         pending | done (maps, legend, captions) | failed
  GET  /api/runs/{run}/occlusions/{id}/{kind}.png   kind: a-input | b-feature | c-projection |
                                               d-probability | d-overlay | e-labels
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response

from convscope.runs import RunReader

from ..errors import ERROR_RESPONSES, ApiError
from . import schemas as S
from .data import State, control_row, layer_names
from .params import MAX_STEP, int_param
from .projections import answer_picture, queue_analysis, request_status

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

PANELS = ("a-input", "b-feature", "c-projection", "d-probability", "d-overlay", "e-labels")
MAX_SIDE = 64  # window and stride at most (as train/occlusion_live.py)
MAX_TARGET = 1 << 20
OcclusionId = Annotated[
    int, int_param(Path, 1, MAX_STEP, "the id POST .../occlusions answered", what="occlusion id ")
]
OCCLUSION = S.obj({
    "id": S.INT, "status": {"enum": ["pending", "done", "failed"]}, "error": S.STR_OR_NULL,
    "image": S.STR_OR_NULL, "layer": S.STR_OR_NULL, "channel": S.INT_OR_NULL, "window": S.INT_OR_NULL,
    "stride": S.INT_OR_NULL, "rows": S.array(S.INT), "cols": S.array(S.INT), "target": S.INT_OR_NULL,
    "target_name": S.STR_OR_NULL, "clean_probability": S.NUM_OR_NULL, "clean_feature": S.NUM_OR_NULL,
    "probability": {"type": "array"}, "feature": {"type": ["array", "null"]}, "label": {"type": "array"},
    "legend": {"type": "array"}, "top": {"type": "array"}, "panels": {"type": "array"},
    "method": S.STR_OR_NULL, "positions": S.INT_OR_NULL, "step": S.INT_OR_NULL, "weights": S.STR_OR_NULL,
    "seconds": S.NUM_OR_NULL,
})  # fmt: skip
SOURCES = S.obj({"uploads": S.array(S.obj({"id": S.INT, "name": S.STR})), "tests": S.INT})
_INT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
BODY = S.body(
    S.obj(
        {"upload": {**_INT_OR_NULL, "maximum": MAX_STEP}, "test": {**_INT_OR_NULL, "maximum": MAX_STEP},
         "layer": S.STR_OR_NULL, "window": {**_INT_OR_NULL, "maximum": MAX_SIDE},
         "stride": {**_INT_OR_NULL, "maximum": MAX_SIDE}, "target": {**_INT_OR_NULL, "maximum": MAX_TARGET}},
        optional=("upload", "test", "layer", "window", "stride", "target"),
    )
)  # fmt: skip


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
        raise ApiError(400, f"{key} must be an integer in {lo}..{hi} or null")
    return v


def _uploads(r: RunReader) -> list[dict[str, Any]]:
    """The run's answered uploads, newest first: what can be occluded besides the test images."""
    out = []
    for row in r.controls():
        result = row.get("result")
        if row.get("key") == "predict" and isinstance(result, dict) and result.get("ok") is not False and row.get("applied_step") is not None:
            value = row.get("value")
            name = str(value.get("name") or "upload") if isinstance(value, dict) else "upload"
            out.append({"id": int(row["id"]), "name": name[:100]})
    return out[::-1]


def _tests(r: RunReader) -> int:
    found = r.snapshot("_test", "input")
    return 0 if found is None or found[1].dim() != 4 else int(found[1].shape[0])


@router.get("/runs/{run}/occlusion-images", response_model=None, responses=S.ok(SOURCES, "what can be occluded"))
def occlusion_images(run: str, state: State) -> dict[str, Any]:
    with state.reader(run) as r:
        return {"uploads": _uploads(r), "tests": _tests(r)}


@router.post("/runs/{run}/occlusions", response_model=None, responses=S.ok(S.SENT, "the request's id"), openapi_extra=BODY)
def request_occlusion(run: str, state: State, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    upload, test = _int(body, "upload", 1, MAX_STEP), _int(body, "test", 0, MAX_STEP)
    value: dict[str, Any] = {
        "window": _int(body, "window", 1, MAX_SIDE), "stride": _int(body, "stride", 1, MAX_SIDE),
        "target": _int(body, "target", 0, MAX_TARGET),
    }  # fmt: skip
    if (upload is None) == (test is None):
        raise ApiError(400, "name exactly one image: 'upload' (an upload id) or 'test' (a test image index)")
    layer = body.get("layer")
    with state.reader(run) as r:
        names = layer_names(r)
        if layer is not None and (not isinstance(layer, str) or layer not in names):
            raise ApiError(400, f"unknown layer {layer!r}; this run's layers: {', '.join(names) or 'none yet'}")
        if upload is not None:
            control_row(r, run, "predict", upload, "upload")
        else:
            n = _tests(r)
            if not 0 <= test < n:  # type: ignore[operator]
                raise ApiError(400, f"test image {test} is out of range: the run has {n}")
        return {"id": queue_analysis(state, r, run, "occlude", {"upload": upload, "test": test, "layer": layer, **value})}


@router.get("/runs/{run}/occlusions/{ident}", response_model=None, responses=S.ok(OCCLUSION, "an occlusion"))
def occlusion_status(run: str, state: State, ident: OcclusionId) -> dict[str, Any]:
    with state.reader(run) as r:
        row = control_row(r, run, "occlude", ident, "occlusion")
        answer = r.json(f"occlusion:{ident}")
    return request_status(ident, row, answer, S.pending(OCCLUSION, ident))


@router.get("/runs/{run}/occlusions/{ident}/{kind}.png", response_class=Response, responses=S.PNG)
def occlusion_image(run: str, state: State, ident: OcclusionId, kind: str) -> Response:
    if kind not in PANELS:
        raise ApiError(400, f"kind must be one of {', '.join(PANELS)}; got {kind!r}")
    return answer_picture(state, run, f"occlusion:{ident}", kind, f"no {kind!r} panel for occlusion {ident} (yet)")
