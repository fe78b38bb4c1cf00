"""Upload your own image: POST it, the server checks and resizes it and asks the trainer for its
predictions (control `predict`), the page polls GET .../uploads/{id} until the trainer answered.

Checks, each a one-line 4xx: the body is capped at `max_upload_bytes` (413) before it is parsed,
the file must be the multipart field "image", and it must pass convscope.data.load_image (the
safe loader: allowed formats only, complete decode, pixel limit). It is then resized to the
run's meta `input_shape` with convscope.data.prepare and re-encoded as PNG for the trainer.

Memory: a small file can be a big image (a 4990x4990 PNG of 80 KB decodes to 75 MB of RGB,
and the decode path holds more than one copy: ~12 bytes per pixel measured). So
each decode first reads the image header, estimates its peak (`decode_estimate`) and reserves
that much of the app's DecodeBudget (state.py): concurrent uploads wait their turn instead of
taking the server to gigabytes, and past the wait bound they get 503.
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import Any

from fastapi import APIRouter, Request, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Message

from convscope.data import ImageError, load_image, prepare, to_chw_float
from convscope.data.image import ALLOWED_FORMATS
from convscope.runs import RunReader

from ..errors import ERROR_RESPONSES, ApiError
from ..pictures import encode_png, image_png
from ..state import AppState
from . import schemas as S
from .data import LISTENING, State, control_row, layer_names, refusal, refuse_read_only, send
from .images import IMMUTABLE
from .params import UploadId

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the file
# peak bytes per pixel while load_image + prepare decode an image, measured with ru_maxrss on
# 3000x3000 PNGs after load_image learnt to convert band by band: RGB 11.3, RGBA 11.8,
# 16-bit grey 7.6, grey 7.1 (before that change: 17.8, 51.9, 31.9, 11.8); rounded up
BYTES_PER_PIXEL = 14
BUSY: dict[int | str, dict[str, Any]] = {503: {"description": "busy decoding other uploads: try again",
              "content": ERROR_RESPONSES["4XX"]["content"]}}  # fmt: skip


def decode_estimate(data: bytes, max_pixels: int) -> int:
    """Peak bytes that decoding `data` will take, from its header alone (nothing is decoded);
    0 when the header cannot be read or is over the pixel limit (load_image refuses it then,
    before decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as im:
                width, height = im.width, im.height
    except Exception:  # any unreadable header: load_image says what is wrong, in one line
        return 0
    pixels = width * height
    return 0 if pixels > max_pixels else pixels * BYTES_PER_PIXEL


@router.post(
    "/runs/{run}/uploads",
    response_model=None,
    responses={**S.ok(S.SENT, "the upload's id"), **BUSY},
    openapi_extra=S.UPLOAD_BODY,
)
async def upload(run: str, state: State, request: Request) -> dict[str, Any]:
    limit = state.config.max_upload_bytes
    too_big = ApiError(413, f"the upload is over the limit of {limit:,} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit + FORM_OVERHEAD:
            raise too_big

    async def replay() -> Message:
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send the image as a multipart/form-data field named 'image'")
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
    except Exception as err:  # the multipart parser's errors differ by version: one line for all
        raise ApiError(400, f"unreadable multipart form ({type(err).__name__})") from None
    file = form.get("image")
    if not isinstance(file, UploadFile):
        raise ApiError(400, "send the image as a multipart/form-data field named 'image'")
    data = await file.read()
    if len(data) > limit:
        raise too_big
    name = "".join(ch for ch in (file.filename or "image") if ch.isprintable())[:100]
    shape = await run_in_threadpool(_input_shape, state, run)
    cfg = state.config
    png = await state.decodes.run(
        lambda: decode_estimate(data, cfg.max_upload_pixels),
        lambda: _decode(state, data, name, shape),
    )
    return await run_in_threadpool(_send, state, run, png, name)


def _input_shape(state: AppState, run: str) -> tuple[int, int, int]:
    """The run's (C, H, W), once it is known that its trainer can take an upload (else 409)."""
    with state.reader(run) as r:
        refuse_read_only(r)
        meta = r.meta()
        status = str(meta.get("status", "running"))
        if meta.get("trainer") != "builtin":
            raise ApiError(
                409, "predictions for an upload need the built-in trainer (convscope demo)"
            )
        if status not in LISTENING:
            raise ApiError(409, f"the run is {status}: no trainer is listening")
        shape = meta.get("input_shape")
        if not (
            isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) for d in shape)
        ):
            raise ApiError(409, "the trainer has not recorded the model's input_shape yet")
        c, h, w = shape
        return c, h, w


def _decode(state: AppState, data: bytes, name: str, shape: tuple[int, int, int]) -> bytes:
    """The upload checked by the safe loader, resized to the run's input, as PNG bytes."""
    c, h, w = shape
    cfg = state.config
    try:
        img = load_image(data, max_bytes=cfg.max_upload_bytes, max_pixels=cfg.max_upload_pixels)
        x = prepare(img, size=(h, w), channels=c, crop=True)  # (C, H, W) in [0, 1], centre-cropped
    except ImageError as err:
        raise ApiError(400, str(err).replace("<bytes>", name or "the upload", 1)) from None
    return encode_png(x)


def _send(state: AppState, run: str, png: bytes, name: str) -> dict[str, Any]:
    with state.reader(run) as r:
        b64 = base64.b64encode(png).decode("ascii")
        return {"id": send(r, "predict", {"png_b64": b64, "name": name})}


def _layers(r: RunReader, ident: int) -> list[dict[str, Any]]:
    """The blocks whose maps the trainer stored for upload `ident`, with their kinds."""
    layers = []
    for name in layer_names(r):
        kinds = [k for k in ("a", "z") if r.snapshot_steps(f"upload:{ident}/{name}", k)]
        if kinds:
            layers.append({"name": name, "kinds": kinds})
    return layers


@router.get(
    "/runs/{run}/uploads/{ident}", response_model=None, responses=S.ok(S.UPLOAD, "an upload")
)
def upload_status(run: str, state: State, ident: UploadId) -> dict[str, Any]:
    with state.reader(run) as r:
        row = control_row(r, run, "predict", ident, "upload")
        found = r.json(f"upload:{ident}")
        if found is not None:
            value = found[1] if isinstance(found[1], dict) else {}
            return {"id": ident, "status": "done", "step": found[0], "top": value.get("top", []),
                    "layers": _layers(r, ident), "error": None}  # fmt: skip
    error = refusal(row, "the trainer refused the image")
    if error is not None:
        return {"id": ident, "status": "failed", "step": row.get("applied_step"), "top": [],
                "layers": [], "error": error}  # fmt: skip
    return {"id": ident, "status": "pending", "step": None, "top": [], "layers": [], "error": None}


@router.get("/runs/{run}/uploads/{ident}/image.png", response_class=Response, responses=S.PNG)
def upload_image(run: str, state: State, ident: UploadId) -> Response:
    with state.reader(run) as r:
        row = control_row(r, run, "predict", ident, "upload")
    value = row.get("value")
    try:
        raw = base64.b64decode(str(value["png_b64"]), validate=True)  # type: ignore[index]
        x = to_chw_float(load_image(raw))
    except (TypeError, KeyError, ValueError, ImageError):
        raise ApiError(404, f"upload {ident} has no readable image") from None
    return Response(image_png(x), media_type="image/png",
                    headers={"Cache-Control": IMMUTABLE})  # fmt: skip
