"""JSON routes over the run store: runs, one run, scalars, layer stats, snapshot steps, json
values, controls (read and send). The list of routes and their answers is in app.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request

from convscope.runs import RunReader, list_runs
from convscope.runs.store import RunReadOnlyError

from ..controls import check_control, describe_checkpoints
from ..errors import ERROR_RESPONSES, ApiError
from ..jsonsafe import SafeJSONResponse
from ..pictures import KINDS
from ..state import AppState
from . import schemas as S
from .params import MaxPoints, Since, SinceId, Step

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

MAX_NAMES = 256  # scalar names per request (each is one SQL parameter)
BLOCK_KINDS = ("x", "conv", "z", "a", "grad_z", "grad_a", "weight", "grad_weight")
LISTENING = ("running", "paused")  # run statuses whose trainer still polls the controls


def dash(request: Request) -> AppState:
    """The app's state (a dependency of every route)."""
    state: AppState = request.app.state.dash
    return state


State = Annotated[AppState, Depends(dash)]


# ---- helpers shared with the other routes and the live channel ----------------------------


def layer_names(r: RunReader) -> list[str]:
    """Block names in forward order, from json `layers` (empty before the trainer wrote it)."""
    found = r.json("layers")
    if found is None or not isinstance(found[1], list):
        return []
    return [str(row["name"]) for row in found[1] if isinstance(row, dict) and "name" in row]


def public_control(c: dict[str, Any]) -> dict[str, Any]:
    """A control row for the page: an upload's image bytes are replaced by their size."""
    out = dict(c)
    value = out.get("value")
    if out.get("key") == "predict" and isinstance(value, dict) and "png_b64" in value:
        out["value"] = {"upload": out["id"], "png_b64_chars": len(str(value["png_b64"]))}
    return out


def summary(state: AppState, name: str, r: RunReader) -> dict[str, Any]:
    """What the page needs to draw a run (GET /api/runs/{run})."""
    meta = r.meta()
    last = r.last_step()
    status = str(meta.get("status", "running"))
    layers = r.json("layers")
    return {
        "name": name,
        "meta": meta,
        "config": r.config(),
        "layers": layers[1] if layers else [],
        "layers_step": layers[0] if layers else None,
        "last_step": last,
        "status": status,
        "stale": r.is_stale(state.config.stale_after_s),
        "checkpoints": describe_checkpoints(r.checkpoints(), meta, r.path),  # with each one's net, and if it fits
        "has_test_images": bool(r.snapshot_steps("_test", "input")),
        "size": r.storage(),
    }


# ---- routes -------------------------------------------------------------------------------


@router.get("/runs", response_model=None, responses=S.ok(S.RUNS, "every run"))
def runs(state: State) -> dict[str, Any]:
    return {"runs": list_runs(state.runs_root)}


@router.get("/runs/{run}", response_model=None, responses=S.ok(S.RUN, "one run"))
def run(run: str, state: State) -> dict[str, Any]:
    with state.reader(run) as r:
        return summary(state, run, r)


@router.get("/runs/{run}/scalars", response_model=None, responses=S.ok(S.SCALARS, "scalars"))
def scalars(
    run: str,
    state: State,
    since: Since = None,
    names: str | None = None,
    max_points: MaxPoints = None,
) -> SafeJSONResponse:
    """Scalars with steps > since; max_points thins each long series evenly (last point kept)."""
    wanted = list(dict.fromkeys(n for n in names.split(",") if n)) if names else None
    if wanted is not None and len(wanted) > MAX_NAMES:
        raise ApiError(400, f"names lists {len(wanted)} scalars; at most {MAX_NAMES} at once")
    with state.reader(run) as r:
        found = r.scalars(names=wanted, since=since, max_points=max_points)
        return SafeJSONResponse({"last_step": r.last_step(), "scalars": found})


@router.get("/runs/{run}/stats", response_model=None, responses=S.ok(S.STATS, "layer stats"))
def stats(
    run: str,
    state: State,
    since: Since = None,
    layer: str | None = None,
    max_points: MaxPoints = None,
) -> SafeJSONResponse:
    """Layer stats rows with steps > since; max_points thins each layer's rows evenly."""
    with state.reader(run) as r:
        rows = r.layer_stats(layer=layer, since=since, max_points=max_points)
        last = r.last_step()
    return SafeJSONResponse({"last_step": last, "stats": rows})  # (not FastAPI's encoder: 7,800 rows took 0.7 s)


@router.get(
    "/runs/{run}/snapshots", response_model=None, responses=S.ok(S.SNAPSHOTS, "snapshot series")
)
def snapshots(run: str, state: State) -> dict[str, Any]:
    """Every recorded snapshot series of the run's blocks: the union of their steps (the
    timeline) and, per (layer, kind), [first step, last step, count]. Computed once per commit
    of the trainer, however many pages ask (every open page asks after each new snapshot)."""
    with state.open_run(run) as opened:
        return opened.memo(("snapshots",), snapshot_index)


def snapshot_index(r: RunReader) -> dict[str, Any]:
    """The answer of GET /snapshots."""
    blocks = set(layer_names(r))
    series: dict[str, dict[str, list[int]]] = {}
    steps: set[int] = set()
    for layer, kind in r.snapshot_series():
        if layer in blocks and kind in BLOCK_KINDS:
            found = r.snapshot_steps(layer, kind)
            if found:
                series.setdefault(layer, {})[kind] = [found[0], found[-1], len(found)]
                steps.update(found)
    return {"steps": sorted(steps), "series": series}


@router.get(
    "/runs/{run}/snapshot-steps",
    response_model=None,
    responses=S.ok(S.SNAPSHOT_STEPS, "steps of one series"),
)
def snapshot_steps(run: str, state: State, layer: str, kind: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise ApiError(400, f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    with state.reader(run) as r:
        return {"layer": layer, "kind": kind, "steps": r.snapshot_steps(layer, kind)}


@router.get(
    "/runs/{run}/json/{key}", response_model=None, responses=S.ok(S.JSON_VALUE, "a json value")
)
def json_value(run: str, state: State, key: str, step: Step = None) -> dict[str, Any]:
    with state.reader(run) as r:
        found = r.json(key, step=step)
    if found is None:
        at = "" if step is None else f" at or before step {step}"
        raise ApiError(404, f"run {run!r} has no json {key!r}{at} (yet)")
    return {"key": key, "step": found[0], "value": found[1]}


@router.get("/runs/{run}/controls", response_model=None, responses=S.ok(S.CONTROLS, "controls"))
def controls(run: str, state: State, since_id: SinceId = 0) -> dict[str, Any]:
    with state.reader(run) as r:
        return {"controls": [public_control(c) for c in r.controls(since_id=since_id)]}


@router.post(
    "/runs/{run}/controls",
    response_model=None,
    responses=S.ok(S.SENT, "the control's id"),
    openapi_extra=S.CONTROL_BODY,
)
def send_control(run: str, state: State, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    with state.reader(run) as r:
        refuse_read_only(r)
        meta = r.meta()
        zoo = meta.get("zoo")
        value = check_control(
            body.get("key"),
            body.get("value"),
            trainer=str(meta.get("trainer", "watch")),
            status=str(meta.get("status", "running")),
            checkpoints=[str(c.get("name")) for c in r.checkpoints()],
            zoo=zoo if isinstance(zoo, list) else [],
        )
        return {"id": send(r, str(body["key"]), value)}


def refuse_read_only(r: RunReader) -> None:
    """409 for a run opened read-only (a finished run on a read-only directory or mount): it
    can be viewed, not steered."""
    if r.read_only:
        raise ApiError(409, "this run is read-only (its directory cannot be written): "
                       "it can be viewed, not controlled")  # fmt: skip


def control_row(r: RunReader, run: str, key: str, ident: int, what: str) -> dict[str, Any]:
    """Control `ident` of the run when it is a `key` request (a projection, a unit, an upload);
    404 naming it as `what` else."""
    row = r.control(ident)
    if row is None or row["key"] != key:
        raise ApiError(404, f"no {what} {ident} in run {run!r}")
    return row


def refusal(row: dict[str, Any], default: str) -> str | None:
    """The trainer's one line when it refused control `row` (result ok: false), else None."""
    result = row.get("result")
    if isinstance(result, dict) and result.get("ok") is False:
        return str(result.get("error", default))
    return None


def send(r: RunReader, key: str, value: Any) -> int:
    """Queue control `key` in the run (also the upload route's `predict`); 409 when the run
    cannot be written."""
    refuse_read_only(r)
    try:
        return r.send_control(key, value)
    except RunReadOnlyError as err:
        raise ApiError(409, f"this run is read-only: {err}") from None
