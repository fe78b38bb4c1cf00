"""The unit explorer's routes: what excites one feature map, computed by the side that holds the
model (convscope/train/units_live.py; for an ended run the worker, train/worker.py).

  POST /api/runs/{run}/units  {"layer", "channel", "stimulus"?}  → {"id"} (a control row `unit`;
                              "stimulus": false skips the optimal stimulus: the page's live refresh)
  GET  /api/runs/{run}/units/{id}                       pending | done (hits, field, ...) | failed
  GET  /api/runs/{run}/units/{id}/{kind}.png            kind: patches | projections | filter | activations | evolution | stimulus

The trainer draws the mosaics (top-9 patches under the receptive field, their deconvnet
projections, the optimal stimulus) and stores them as images; the server only encodes them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response

from ..errors import ERROR_RESPONSES, ApiError
from . import schemas as S
from .data import State, control_row
from .params import MAX_STEP, int_param
from .projections import MAX_CHANNEL, answer_picture, queue_model_request, request_status

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

UNIT_KINDS = ("patches", "projections", "filter", "activations", "evolution", "stimulus")
UnitId = Annotated[
    int, int_param(Path, 1, MAX_STEP, "the id POST .../units answered", what="unit request id ")
]
HIT = S.obj({"value": S.NUM_OR_NULL, "index": S.INT, "position": S.array(S.INT), "box": S.array(S.INT)})
UNIT = S.obj({
    "id": S.INT, "status": {"enum": ["pending", "done", "failed"]}, "error": S.STR_OR_NULL,
    "layer": S.STR_OR_NULL, "channel": S.INT_OR_NULL, "hits": S.array(HIT), "probe_images": S.INT_OR_NULL,
    "field": {"type": ["object", "null"]}, "stimulus_activation": S.NUM_OR_NULL,
    "has_filter": {"type": ["boolean", "null"]}, "evolution_steps": S.array(S.INT),
    "evolution_note": S.STR_OR_NULL, "step": S.INT_OR_NULL,
    "weights": S.STR_OR_NULL, "seconds": S.NUM_OR_NULL,
})  # fmt: skip
BODY = S.body(
    S.obj(
        {"layer": S.STR, "channel": {"type": "integer", "minimum": 0, "maximum": MAX_CHANNEL},
         "stimulus": {"type": "boolean"}},
        optional=("stimulus",),
    )
)


@router.post("/runs/{run}/units", response_model=None, responses=S.ok(S.SENT, "the request's id"), openapi_extra=BODY)
def request_unit(run: str, state: State, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    channel, stimulus = body.get("channel"), body.get("stimulus", True)
    if channel is None:
        raise ApiError(400, f"channel must be an integer in 0..{MAX_CHANNEL}")
    if not isinstance(stimulus, bool):
        raise ApiError(400, "stimulus must be true or false")
    extra = {"stimulus": stimulus}
    return {"id": queue_model_request(state, run, "unit", body.get("layer"), channel, None, extra)}


@router.get("/runs/{run}/units/{ident}", response_model=None, responses=S.ok(UNIT, "a unit"))
def unit_status(run: str, state: State, ident: UnitId) -> dict[str, Any]:
    with state.reader(run) as r:
        row = control_row(r, run, "unit", ident, "unit request")
        answer = r.json(f"unit:{ident}")
    return request_status(ident, row, answer, S.pending(UNIT, ident))


@router.get("/runs/{run}/units/{ident}/{kind}.png", response_class=Response, responses=S.PNG)
def unit_image(run: str, state: State, ident: UnitId, kind: str) -> Response:
    if kind not in UNIT_KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(UNIT_KINDS)}; got {kind!r}")
    return answer_picture(state, run, f"unit:{ident}", kind, f"no {kind!r} picture for unit request {ident} (yet)")
