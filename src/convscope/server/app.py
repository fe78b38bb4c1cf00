"""The dashboard's FastAPI app: `create_app(runs_root, config)` -> an ASGI app over a runs directory.

    from convscope.config import ServeConfig
    from convscope.server import create_app, serve
    app = create_app(Path("runs"), ServeConfig())       # in-process (tests: TestClient(app))
    serve(Path("runs"), ServeConfig(port=8000))          # blocking, Ctrl-C stops it cleanly

Routes (JSON unless said otherwise; every error is 4xx/5xx with {"error": "one line"}):

  GET  /                                     the page (static/index.html); /static/* its files
  GET  /api/runs                             {"runs": [{"name","status","last_step","model","created"}]}
  GET  /api/runs/{run}                       {"name","meta","config","layers","layers_step",
                                              "last_step","status","stale","checkpoints",
                                              "has_test_images"}
  GET  /api/runs/{run}/scalars?since=S&names=a,b&max_points=N
                                             {"last_step", "scalars": {name: [[step, v]]}}
                                             (steps > S, all without since; N thins each series)
  GET  /api/runs/{run}/stats?since=S&layer=L&max_points=N
                                             {"last_step", "stats": [{"step","layer",...}]}
  GET  /api/runs/{run}/snapshots                     {"steps": [...], "series": {layer: {kind:
                                                      [first step, last step, count]}}}
  GET  /api/runs/{run}/snapshot-steps?layer=&kind=   {"layer","kind","steps": [...]}
  GET  /api/runs/{run}/image.png?layer=&kind=&step=&norm=map|layer|global&sample=0[&scale=]
        PNG of the snapshot at or before `step` (newest without); header X-Step = its step;
        norm=global uses `scale`, else max |v| of that kind over all the run's layers at that step
  GET  /api/runs/{run}/za.png?layer=&step=&sample=0  z | a side by side on one 0-centred scale
  GET  /api/runs/{run}/test-images/{i}.png           test image i (snapshot "_test"/"input")
  GET  /api/runs/{run}/colour.png?layer=&step=        the first block's x as the picture (un-normalised)
  GET  /api/runs/{run}/json/{key}?step=              {"key","step","value"} (predictions,
                                                      findings, layers, upload:ID, ...)
  GET  /api/runs/{run}/controls?since_id=0           {"controls": [{"id","key","value","time",
                                                      "applied_step","result"}]}
  POST /api/runs/{run}/controls   {"key","value"}    {"id"}  (validated: see controls.py)
  POST /api/runs/{run}/uploads    multipart "image"  {"id"}  (capped, safe loader, resized to
                                                      the run's input_shape, sent as `predict`)
  GET  /api/runs/{run}/uploads/{id}                  {"id","status": pending|done|failed,"step",
                                                      "top","layers": [{"name","kinds"}],"error"}
  GET  /api/runs/{run}/uploads/{id}/image.png        the image as the trainer received it
  GET  /api/runs/{run}/events                        server-sent events: hello, step, scalars,
                                                      stats, snapshot, json, controls; ": ping"
                                                      heartbeat (events.py)

Every request passes the guard in security.py first: Host check (403), token when
`config.token` is set (401; a `?token=T` is exchanged for an HttpOnly SameSite=Strict cookie),
Origin check on POST/PUT/DELETE (403), and security headers (nosniff, CSP, no framing,
no referrer) on every response.
Past snapshot pictures asked for by exact step are immutable: `Cache-Control: immutable`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from convscope.config import ServeConfig

from .errors import ApiError
from .events import Broadcaster
from .jsonsafe import SafeJSONResponse
from .routes import data, embedding, images, occlusion, projections, units, uploads
from .security import HEADERS, Guard
from .state import AppState

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("convscope.server")


def create_app(runs_root: Path, config: ServeConfig) -> FastAPI:
    """The dashboard over every run directory in `runs_root` (see the module docstring)."""
    if not isinstance(config, ServeConfig):
        raise TypeError(f"create_app needs a ServeConfig, got {type(config).__name__}")
    state = AppState(runs_root=Path(runs_root), config=config)
    broadcaster = Broadcaster(state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.stopping.set()  # live streams end; their watchers stop
        await broadcaster.close()
        state.workers.stop_all()
        state.readers.close()
        state.decodes.close()

    app = FastAPI(
        title="convscope dashboard",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.dash = state
    app.state.broadcaster = broadcaster

    app.add_middleware(Guard, config=config)
    _add_error_handlers(app)
    app.include_router(data.router)
    app.include_router(images.router)
    app.include_router(uploads.router)
    app.include_router(projections.router)
    app.include_router(units.router)
    app.include_router(occlusion.router)
    app.include_router(embedding.router)
    app.include_router(broadcaster.router())

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "bad request"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such page or API route"
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":  # loc: ("body", character offset)
            why = str((first.get("ctx") or {}).get("error", "")).strip()
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            return JSONResponse({"error": f"the body is not valid JSON ({why or 'cannot be parsed'}{at})"}, status_code=400)
        if loc == ("body",) and first.get("type") in ("dict_type", "missing"):
            empty = "; it is empty" if first.get("type") == "missing" else ""
            return JSONResponse({"error": f"the body must be a JSON object ({{...}}){empty}"}, status_code=400)
        where = ".".join(str(p) for p in loc if p not in ("query", "body"))
        msg = str(first.get("msg", "invalid request")).rstrip(".")
        return JSONResponse({"error": f"{where}: {msg}" if where else msg}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("error serving %s", request.url.path, exc_info=exc)
        line = " ".join(str(exc).split())[:300]
        return JSONResponse(  # this handler runs outside the Guard: it adds the headers itself
            {"error": f"server error ({type(exc).__name__}): {line}"},
            status_code=500,
            headers=HEADERS,
        )
