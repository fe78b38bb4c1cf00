"""PNG routes: a snapshot as a picture, z | a on one scale, and the test images (see app.py).

Pictures are rendered with convscope.render and kept in the app's LRU cache keyed by
(run, layer, kind, step, norm, sample, scale); a picture asked for by its exact recorded step
never changes, so it is sent with `Cache-Control: immutable`.
"""

from __future__ import annotations

import bisect

import torch
from fastapi import APIRouter, Response

from convscope.runs import RunReader

from ..errors import ERROR_RESPONSES, ApiError
from ..pictures import KINDS, NORMS, Norm, image_png, magnitude, snapshot_png, za_png
from .data import BLOCK_KINDS, State, layer_names
from .params import Sample, Scale, Step, TestIndex
from .schemas import PNG

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

IMMUTABLE = "private, max-age=31536000, immutable"
FRESH = "no-cache"


def resolve_step(r: RunReader, layer: str, kind: str, step: int | None) -> int:
    """The recorded step of (layer, kind) at or before `step` (the newest without), else 404."""
    steps = r.snapshot_steps(layer, kind)
    if not steps:
        raise ApiError(404, f"no {kind!r} snapshot of layer {layer!r} in this run (yet)")
    if step is None:
        return steps[-1]
    i = bisect.bisect_right(steps, step)
    if i == 0:
        raise ApiError(404, f"no {kind!r} snapshot of layer {layer!r} at or before step {step}")
    return steps[i - 1]


def check_picture(kind: str, norm: str) -> Norm:
    """`norm` once `kind` and `norm` are ones a picture is drawn with (image.png and its
    cells), else 400."""
    if kind not in KINDS:
        raise ApiError(400, f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if norm not in NORMS:
        raise ApiError(400, f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
    return norm


def load(r: RunReader, layer: str, kind: str, step: int) -> torch.Tensor:
    found = r.snapshot(layer, kind, step)
    if found is None or found[0] != step:  # thinned away between the two reads
        raise ApiError(
            404, f"the {kind!r} snapshot of {layer!r} at step {step} is gone (retention)"
        )
    return found[1]


def global_scale(r: RunReader, kind: str, step: int) -> float:
    """max |v| of `kind` over all the run's blocks at `step` (one scale for the whole net)."""
    m = 0.0
    for layer in layer_names(r):
        found = r.snapshot(layer, kind, step)
        if found is not None:
            m = max(m, magnitude(found[1]))
    return m or 1.0


def _png(body: bytes, step: int, exact: bool) -> Response:
    headers = {"X-Step": str(step), "Cache-Control": IMMUTABLE if exact else FRESH}
    return Response(body, media_type="image/png", headers=headers)


@router.get("/runs/{run}/image.png", response_class=Response, responses=PNG)
def snapshot_image(
    run: str,
    state: State,
    layer: str,
    kind: str,
    step: Step = None,
    norm: str = "map",
    sample: Sample = 0,
    scale: Scale = None,
) -> Response:
    drawn = check_picture(kind, norm)
    if scale is not None and norm != "global":
        raise ApiError(400, "scale goes with norm=global only")
    with state.reader(run) as r:
        at = resolve_step(r, layer, kind, step)

        def make() -> bytes:
            t = load(r, layer, kind, at)
            s = scale
            if norm == "global" and s is None:
                s = global_scale(r, kind, at) if kind in BLOCK_KINDS else (magnitude(t) or 1.0)
            try:
                return snapshot_png(t, kind, norm=drawn, scale=s, sample=sample)
            except ValueError as err:  # e.g. sample out of range, NaN in a diverged run
                raise ApiError(400, str(err)) from None

        key = ("image", run, layer, kind, at, norm, sample, scale)
        return _png(state.pictures.get_or_make(key, make), at, exact=step == at)


@router.get("/runs/{run}/za.png", response_class=Response, responses=PNG)
def za_image(run: str, state: State, layer: str, step: Step = None, sample: Sample = 0) -> Response:
    with state.reader(run) as r:
        at = resolve_step(r, layer, "z", step)

        def make() -> bytes:
            z = load(r, layer, "z", at)
            found = r.snapshot(layer, "a", at)
            if found is None or found[0] != at:
                raise ApiError(404, f"layer {layer!r} has z but no a at step {at}")
            try:
                return za_png(z, found[1], sample=sample)
            except ValueError as err:
                raise ApiError(400, str(err)) from None

        key = ("za", run, layer, at, sample)
        return _png(state.pictures.get_or_make(key, make), at, exact=step == at)


@router.get("/runs/{run}/test-images/{index}.png", response_class=Response, responses=PNG)
def test_image(run: str, state: State, index: TestIndex) -> Response:
    with state.reader(run) as r:
        at = resolve_step(r, "_test", "input", None)

        def make() -> bytes:
            x = load(r, "_test", "input", at)  # (N, C, H, W) in [0, 1]
            if not 0 <= index < x.shape[0]:
                raise ApiError(404, f"test image {index} out of range: the run has {x.shape[0]}")
            try:
                return image_png(x[index])
            except ValueError as err:
                raise ApiError(400, str(err)) from None

        body = state.pictures.get_or_make(("test", run, at, index), make)
    return _png(body, at, exact=False)


def unnormalised(x: torch.Tensor, meta: dict[str, object]) -> torch.Tensor:
    """A model input (C, H, W) back to an image in [0, 1]: x·std + mean with the run's meta
    `input_mean`/`input_std` (the built-in trainer writes them); without them, one min-max
    scale for all channels (the colours keep their relations, the contrast is stretched)."""
    mean, std = meta.get("input_mean"), meta.get("input_std")
    c = x.shape[0]
    if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == c:
        try:
            m = torch.tensor([float(v) for v in mean]).view(c, 1, 1)
            s = torch.tensor([float(v) for v in std]).view(c, 1, 1)
        except (TypeError, ValueError):
            pass
        else:
            return (x.float() * s + m).clamp(0, 1)
    lo, hi = float(x.min()), float(x.max())
    return (x.float() - lo) / (hi - lo) if hi > lo else torch.zeros_like(x, dtype=torch.float32)


@router.get("/runs/{run}/colour.png", response_class=Response, responses=PNG)
def colour_image(run: str, state: State, layer: str, step: Step = None) -> Response:
    """The first block's input x (an RGB or grey image) as the picture itself, not as channels."""
    with state.reader(run) as r:
        at = resolve_step(r, layer, "x", step)
        meta = r.meta()

        def make() -> bytes:
            x = load(r, layer, "x", at)
            if x.dim() != 4 or x.shape[1] not in (1, 3):
                raise ApiError(400, f"x of {layer!r} is not an image batch (N, 1 or 3, H, W): {tuple(x.shape)}")
            return image_png(unnormalised(x[0], meta))

        key = ("colour", run, layer, at)
        return _png(state.pictures.get_or_make(key, make), at, exact=step == at)
