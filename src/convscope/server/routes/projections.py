"""Projections on the dashboard: a feature map back to pixels, computed by the side that holds
the model (DESIGN §3 "Analyses on demand"; the answering side is convscope/train/projections.py).

  GET  /api/runs/{run}/cells?layer&kind&step&norm&sample   where each map is in a picture (clicks)
  POST /api/runs/{run}/projections  {"layer", "channel": K|null, "step"}   → {"id"} (a control row)
  GET  /api/runs/{run}/projections/{id}                    pending | done (the units) | failed
  GET  /api/runs/{run}/projections/{id}/{channel}/{kind}.png   kind: a | deconvnet | guided

For a run whose trainer has ended, the request starts a worker process (server/workers.py →
`convscope answer`) that answers from the run's newest checkpoint. The server only queues the
request and draws what the trainer or the worker stored (render.attribution: the
projection as signed RGB, grey = 0, as Zeiler & Fergus show it).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response

from convscope.render import attribution, grid
from convscope.runs import RunReader

from ..errors import ERROR_RESPONSES, ApiError
from ..pictures import image_png, snapshot_picture
from ..state import AppState
from . import schemas as S
from .data import LISTENING, State, control_row, layer_names, refusal, refuse_read_only, send
from .images import IMMUTABLE, check_picture, load, resolve_step
from .params import MAX_STEP, Sample, Step, int_param

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

PROJECTION_KINDS = ("a", "deconvnet", "guided")
MAX_CHANNEL = 65_535

ProjectionId = Annotated[
    int, int_param(Path, 1, MAX_STEP, "the id POST .../projections answered", what="projection id ")
]
Channel = Annotated[
    int, int_param(Path, 0, MAX_CHANNEL, "a feature map of the projected layer", what="channel ")
]

CELLS = S.obj({
    "step": S.INT, "width": S.INT, "height": S.INT,
    "cells": S.array({"type": "array", "items": S.INT, "minItems": 4, "maxItems": 4}),
})  # fmt: skip
UNIT = S.obj({"channel": S.INT, "value": S.NUM_OR_NULL, "position": {"type": ["array", "null"]},
              "name": S.STR_OR_NULL})  # fmt: skip  # name: the class, for the output layer
PROJECTION = S.obj({
    "id": S.INT, "status": {"enum": ["pending", "done", "failed"]}, "error": S.STR_OR_NULL,
    "layer": S.STR_OR_NULL, "tensor": S.STR_OR_NULL, "symbol": {"enum": ["a", "z", None]},
    "step": S.INT_OR_NULL,
    "input_step": S.INT_OR_NULL, "weights": S.STR_OR_NULL, "asked": S.INT_OR_NULL, "seconds": S.NUM_OR_NULL,
    "budget_s": S.NUM_OR_NULL, "units": S.array(UNIT), "rules": {"type": "object"},
})  # fmt: skip
REQUEST_BODY = S.body(
    S.obj(
        {"layer": S.STR,
         "channel": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_CHANNEL},
         "step": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_STEP}},
        optional=("channel", "step"),
    )
)


@router.get("/runs/{run}/cells", response_model=None, responses=S.ok(CELLS, "the picture's map boxes"))
def cells(
    run: str, state: State, layer: str, kind: str, step: Step = None, norm: str = "map", sample: Sample = 0
) -> dict[str, Any]:
    """The box [x, y, w, h] of each map in the picture image.png draws for the same arguments."""
    drawn = check_picture(kind, norm)
    with state.reader(run) as r:
        at = resolve_step(r, layer, kind, step)
        t = load(r, layer, kind, at)
    try:
        pic = snapshot_picture(t, kind, norm="map" if drawn == "global" else drawn, sample=sample)
    except ValueError as err:
        raise ApiError(400, str(err)) from None
    return {"step": at, "width": pic.width, "height": pic.height, "cells": [list(c) for c in pic.cells]}


@router.post(
    "/runs/{run}/projections",
    response_model=None,
    responses=S.ok(S.SENT, "the request's id"),
    openapi_extra=REQUEST_BODY,
)
def request_projection(run: str, state: State, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    layer, channel, step = body.get("layer"), body.get("channel"), body.get("step")
    return {"id": queue_model_request(state, run, "project", layer, channel, step)}


def queue_model_request(
    state: AppState, run: str, key: str, layer: Any, channel: Any, step: Any, extra: dict[str, Any] | None = None
) -> int:
    """Check a request for the side that holds the model and queue it as control `key`; for a
    run whose trainer has ended, start its worker (train/worker.py). Returns the control id."""
    for name, v, hi in (("channel", channel, MAX_CHANNEL), ("step", step, MAX_STEP)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi):
            raise ApiError(400, f"{name} must be an integer in 0..{hi} or null")
    with state.reader(run) as r:
        refuse_read_only(r)
        names = layer_names(r)
        if not isinstance(layer, str) or layer not in names:
            raise ApiError(400, f"unknown layer {layer!r}; this run's layers: {', '.join(names) or 'none yet'}")
        return queue_analysis(state, r, run, key, {"layer": layer, "channel": channel, "step": step, **(extra or {})})


def queue_analysis(state: AppState, r: RunReader, run: str, key: str, value: dict[str, Any]) -> int:
    """Queue control `key` for the side that holds the model; for a run whose trainer has ended,
    start its worker, which answers from the newest checkpoint (train/worker.py). 409 when nobody
    can answer."""
    refuse_read_only(r)
    meta = r.meta()
    status = str(meta.get("status", "running"))
    ended = status not in LISTENING
    if ended:
        if meta.get("trainer") != "builtin":
            raise ApiError(409, f"the run is {status} and was recorded by watch() in your own loop: "
                           "its model is not in the run, so only your running loop can answer")  # fmt: skip
        if not r.checkpoints():
            raise ApiError(409, f"the run is {status} and has no checkpoint to answer with")
    ident = send(r, key, value)
    if ended:
        state.workers.ensure(run, r.path)
    return ident


def answer_picture(state: AppState, run: str, series: str, kind: str, missing: str) -> Response:
    """A picture the model's side stored with its answer (snapshot `series`/`kind`, (1, C, H, W)
    in [0, 1]) as an immutable PNG, drawn once; 404 saying `missing` while it is not there."""
    with state.reader(run) as r:
        found = r.snapshot(series, kind)
    if found is None:
        raise ApiError(404, missing)
    step, t = found
    body = state.pictures.get_or_make(("answer", run, series, kind, step), lambda: image_png(t.float()[0]))
    return Response(body, media_type="image/png", headers={"Cache-Control": IMMUTABLE})


def request_status(ident: int, row: dict[str, Any], answer: Any, empty: dict[str, Any]) -> dict[str, Any]:
    """A model request's status shaped like `empty` (its pending answer): "done" with the fields
    of the stored `answer` (lists and objects never null), or "failed" with the trainer's line."""
    if answer is not None and isinstance(answer[1], dict):
        v = answer[1]
        done = {k: v[k] for k in empty if k in v}
        done.update({k: v.get(k) or d for k, d in empty.items() if isinstance(d, list | dict)})
        return {**empty, **done, "id": ident, "status": "done"}
    error = refusal(row, "the trainer refused")
    if error is not None:
        return {**empty, "status": "failed", "error": error}
    return empty


@router.get(
    "/runs/{run}/projections/{ident}", response_model=None, responses=S.ok(PROJECTION, "a projection")
)
def projection_status(run: str, state: State, ident: ProjectionId) -> dict[str, Any]:
    with state.reader(run) as r:
        row = control_row(r, run, "project", ident, "projection")
        answer = r.json(f"project:{ident}")
        classes = output_classes(r)
    out = request_status(ident, row, answer, S.pending(PROJECTION, ident))
    if out["status"] == "done":
        tensor = out["tensor"] if isinstance(out["tensor"], str) else ""
        symbol = symbol_of(tensor)
        names = classes.get(str(out["layer"])) if symbol == "z" else None
        out["symbol"] = symbol
        out["units"] = [
            {**u, "name": names[u["channel"]] if names and 0 <= u.get("channel", -1) < len(names) else None}
            for u in out["units"]
            if isinstance(u, dict)
        ]
    return out


def symbol_of(tensor: str) -> str | None:
    """"a" or "z" for a block's tensor as the answerer names it ("a of block conv2 (after relu2)",
    "z of block fc (no activation follows)"), None for a module's output: the letter the page
    writes before a unit's value."""
    head = tensor.split(" ", 1)[0]
    return head if head in ("a", "z") and tensor.startswith(f"{head} of block ") else None


def output_classes(r: RunReader) -> dict[str, list[str]]:
    """{the last layer: the run's class names} when its output has one unit per class (its z
    are the class scores), else {}."""
    classes = r.meta().get("classes")
    found = r.json("layers")
    rows = found[1] if found is not None and isinstance(found[1], list) else []
    last = rows[-1] if rows and isinstance(rows[-1], dict) else {}
    if not isinstance(classes, list) or last.get("out_shape") != [len(classes)] or not classes:
        return {}
    return {str(last.get("name")): [str(c) for c in classes]}


@router.get(
    "/runs/{run}/projections/{ident}/{channel}/{kind}.png", response_class=Response, responses=S.PNG
)
def projection_image(run: str, state: State, ident: ProjectionId, channel: Channel, kind: str) -> Response:
    if kind not in PROJECTION_KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(PROJECTION_KINDS)}; got {kind!r}")
    series = f"project:{ident}/{channel}"
    with state.reader(run) as r:
        found = r.snapshot(series, kind)
        if found is None:
            raise ApiError(404, f"no {kind!r} picture for map {channel} of projection {ident} (yet)")
        step, t = found

        def make() -> bytes:
            if kind == "a":  # one map, no labels or notes: drawn beside its projections at their size
                return grid(t.float(), labels=False, signed=bool((t < 0).any())).png()
            if t.dim() == 4 and t.shape[1] == 3:  # signed RGB, grey = 0 (ZF's way)
                return attribution(t.float(), style="rgb").png()
            return snapshot_picture(t.float(), "grad_a", norm="map").png()  # other inputs: signed maps

        body = state.pictures.get_or_make(("projection", run, ident, channel, kind, step), make)
    return Response(body, media_type="image/png", headers={"Cache-Control": IMMUTABLE})

