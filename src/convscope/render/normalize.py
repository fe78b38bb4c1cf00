"""Normalisation: raw values -> floats in [0, 1] for a colormap, honest about the range it used.

Signed data (z, gradients, weights): 0 -> 0.5, +m -> 1, -m -> 0, with m = max |v|.
Unsigned data (a >= 0 after ReLU): 0 -> 0, m -> 1, with m = max v.
Where m comes from is the mode:
  "map"    each map its own m (shape within a map; maps not comparable with each other)
  "layer"  one m over all N maps (maps comparable; weak maps look weak)
  "global" m = `scale`, given by the caller to compare steps or layers; values beyond it clip
           to the ends and `clipped` says which maps had some.
A constant map (every value equal up to float round-off, e.g. a dead filter's all-zero map)
never divides by zero, and is reported in `constant` so the drawing can mark it.

    n = normalize(a, mode="layer", signed=False)     # a: (N, H, W)
    n.values  # (N, H, W) in [0, 1];  n.vmin, n.vmax  # (N,) values drawn at 0 and 1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Mode = Literal["map", "layer", "global"]
MODES: tuple[Mode, ...] = ("map", "layer", "global")

CONSTANT_RTOL = 1e-6  # a map whose values differ by less than this fraction of them is constant

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def as_array(values: npt.ArrayLike, *, what: str) -> Floats:
    """A float64 numpy copy of a torch tensor or array-like; refuses NaN/Inf with one clear error.

    Torch tensors go through detach().cpu().float(), so tensors that require grad, live on a GPU
    or are bfloat16 all work. `what` names the input in error messages.
    """
    if callable(getattr(values, "detach", None)):  # a torch.Tensor, without importing torch
        tensor = values.detach()  # type: ignore[union-attr]
        if tensor.is_complex():
            raise ValueError(f"{what}: complex tensors can't be drawn; take .abs() or .real first")
        values = tensor.cpu().float().numpy()
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what}: expected real numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64, copy=False)  # callers never write into it
    finite = np.isfinite(out)
    if not finite.all():
        n_nan = int(np.isnan(out).sum())
        n_inf = int(out.size - finite.sum()) - n_nan
        raise ValueError(
            f"{what} has {n_nan} NaN and {n_inf} infinite value(s) among {out.size} "
            f"(shape {tuple(out.shape)}); non-finite values can't be drawn truthfully "
            "(a diverged training step? check the loss and learning rate)"
        )
    return out


@dataclass(frozen=True, eq=False)
class Normalized:
    """The result of `normalize`: values for a colormap and the truth about how they were made."""

    values: Floats  # (N, ...) in [0, 1], same shape as the input
    constant: Bools  # (N,) map has more than one value, all equal up to round-off (dead, ...)
    clipped: Bools  # (N,) some value lay beyond the given scale (only in mode "global")
    vmin: Floats  # (N,) the data value drawn at 0: -m when signed, else 0
    vmax: Floats  # (N,) the data value drawn at 1: m
    signed: bool


def normalize(
    values: npt.ArrayLike,
    *,
    mode: Mode = "map",
    signed: bool,
    scale: float | None = None,
) -> Normalized:
    """Map N maps (N, ...) -- usually (N, H, W) -- into [0, 1]; see the module docstring."""
    v = as_array(values, what="normalize input")
    if v.ndim < 1 or v.size == 0:
        raise ValueError(f"normalize needs N maps shaped (N, ...), N >= 1; got shape {v.shape}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "global":
        if scale is None or not np.isfinite(scale) or scale <= 0:
            raise ValueError(
                f"mode='global' needs a finite scale > 0 (the m for all maps); got {scale!r}"
            )
    elif scale is not None:
        raise ValueError(
            f"scale is used only with mode='global'; got scale={scale!r} with mode={mode!r}"
        )

    n = v.shape[0]
    flat = v.reshape(n, -1)  # (N, P)
    lo, hi = flat.min(axis=1), flat.max(axis=1)  # (N,)
    if not signed and lo.min() < 0:
        raise ValueError(
            f"signed=False but the values go down to {lo.min():.4g}; unsigned drawing maps 0 to "
            "the dark end and can't show negatives -- pass signed=True (or signed=None in grid)"
        )
    # constant: spread within CONSTANT_RTOL of the magnitude (float round-off of one value);
    # a single value is not "constant", just a value
    constant = (hi - lo <= CONSTANT_RTOL * np.maximum(np.abs(lo), np.abs(hi))) & (flat.shape[1] > 1)
    mag = np.abs(flat).max(axis=1) if signed else hi  # (N,) each map's own m
    if mode == "map":
        m = mag
    elif mode == "layer":
        m = np.full(n, mag.max())
    else:
        m = np.full(n, float(scale))  # type: ignore[arg-type]
    clipped = mag > m
    safe = np.where(m > 0, m, 1.0)[:, None]  # m == 0 only when every value is 0
    out = 0.5 + 0.5 * (flat / safe) if signed else flat / safe
    np.clip(out, 0.0, 1.0, out=out)
    return Normalized(
        values=out.reshape(v.shape),
        constant=constant,
        clipped=clipped,
        vmin=-m if signed else np.zeros(n),
        vmax=m,
        signed=signed,
    )
