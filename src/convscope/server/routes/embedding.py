"""The embedding view's routes: a t-SNE map of the run's held-out images' codes (the layer before the
classifier by default), and the same images at another checkpoint placed into that map — computed
by the side that holds the model (convscope/train/embedding_live.py; for an ended run the worker).

  POST /api/runs/{run}/embeddings  {"layer"?, "n"?, "base"?: ID, "checkpoint"?: NAME}  → {"id"}
                                   (a control row `embed`; with "base": place into map ID)
  GET  /api/runs/{run}/embeddings/{id}            pending | done (xy, labels, classes, ...) | failed
  GET  /api/runs/{run}/embeddings/{id}/thumbs.png the images as a sprite sheet (`thumb` px each,
                                   image i at row i // cols, column i % cols, cols = ceil(sqrt(n)))
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response

from ..errors import ERROR_RESPONSES, ApiError
from ..pictures import encode_png
from . import schemas as S
from .data import State, control_row
from .images import IMMUTABLE
from .params import MAX_STEP, int_param
from .projections import queue_analysis, request_status

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

MAX_N = 1000  # as train/embedding_live.py
MIN_N = 4  # t-SNE's smallest perplexity, 1, needs 3 × 1 + 1 images
EmbeddingId = Annotated[
    int, int_param(Path, 1, MAX_STEP, "the id POST .../embeddings answered", what="embedding id ")
]
EMBEDDING = S.obj({
    "id": S.INT, "status": {"enum": ["pending", "done", "failed"]}, "error": S.STR_OR_NULL,
    "layer": S.STR_OR_NULL, "n": S.INT_OR_NULL, "xy": {"type": "array"}, "labels": S.array(S.INT),
    "classes": S.array(S.STR), "base": S.INT_OR_NULL, "checkpoint": S.STR_OR_NULL, "perplexity": S.NUM_OR_NULL,
    "method": S.STR_OR_NULL, "agreement": S.NUM_OR_NULL, "chance": S.NUM_OR_NULL, "thumbs": S.INT_OR_NULL,
    "thumb": S.INT_OR_NULL, "step": S.INT_OR_NULL, "weights": S.STR_OR_NULL, "seconds": S.NUM_OR_NULL,
})  # fmt: skip
BODY = S.body(
    S.obj(
        {"layer": S.STR_OR_NULL, "checkpoint": S.STR_OR_NULL,
         "n": {"type": ["integer", "null"], "minimum": 2, "maximum": MAX_N},
         "base": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_STEP}},
        optional=("layer", "checkpoint", "n", "base"),
    )
)  # fmt: skip


@router.post("/runs/{run}/embeddings", response_model=None, responses=S.ok(S.SENT, "the request's id"), openapi_extra=BODY)
def request_embedding(run: str, state: State, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    layer, ckpt, n, base = body.get("layer"), body.get("checkpoint"), body.get("n"), body.get("base")
    for key, v in (("layer", layer), ("checkpoint", ckpt)):
        if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 200):
            raise ApiError(400, f"{key} must be a name or null")
    for key, v, lo, hi in (("n", n, MIN_N, MAX_N), ("base", base, 1, MAX_STEP)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise ApiError(400, f"{key} must be an integer in {lo}..{hi} or null")
    with state.reader(run) as r:
        if ckpt is not None and ckpt not in {str(c.get("name")) for c in r.checkpoints()}:
            raise ApiError(400, f"the run has no checkpoint {ckpt!r}")
        if base is not None:
            control_row(r, run, "embed", base, "embedding")
            found = r.json(f"embed:{base}")
            if found is None or not isinstance(found[1], dict) or found[1].get("base") is not None:
                raise ApiError(409, f"embedding {base} is not a finished map (yet): place into a map once it is drawn")
        value = {"layer": layer, "n": n, "base": base, "checkpoint": ckpt}
        return {"id": queue_analysis(state, r, run, "embed", value)}


@router.get("/runs/{run}/embeddings/{ident}", response_model=None, responses=S.ok(EMBEDDING, "an embedding"))
def embedding_status(run: str, state: State, ident: EmbeddingId) -> dict[str, Any]:
    with state.reader(run) as r:
        row = control_row(r, run, "embed", ident, "embedding")
        answer = r.json(f"embed:{ident}")
    return request_status(ident, row, answer, S.pending(EMBEDDING, ident))


@router.get("/runs/{run}/embeddings/{ident}/thumbs.png", response_class=Response, responses=S.PNG)
def embedding_thumbs(run: str, state: State, ident: EmbeddingId) -> Response:
    with state.reader(run) as r:
        found = r.snapshot(f"embed:{ident}", "thumbs")
    if found is None:
        raise ApiError(404, f"no thumbnails for embedding {ident} (yet; a placement uses its base map's)")
    step, t = found
    body = state.pictures.get_or_make(("embed", run, ident, step), lambda: encode_png(t.float()[0]))
    return Response(body, media_type="image/png", headers={"Cache-Control": IMMUTABLE})
