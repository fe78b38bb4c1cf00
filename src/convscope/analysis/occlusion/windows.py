"""Where the occluder goes (Captum's Occlusion windows, ZF Fig. 7's grey square): https://arxiv.org/abs/1311.2901

    wins = windows((C, H, W), (C, 16, 16), (C, 8, 8))   # [(c0, c1, r0, r1, q0, q1), ...] row-major
    m = mask(wins, C, top, h, w, left)                  # (N, C, h, w) bool: what each window occludes
    grey = baseline_value("grey", C, normalize, dtype)   # (C,) the occluder's value

Windows start every stride from 0 and the last one is cut at the border (as Captum:
ceil((D − w) / s) + 1 positions per dimension). occlusion.py runs the model on them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from convscope.analysis.attribution.base import AttributionError

Window = tuple[int, int, int, int, int, int]  # channels c0:c1, rows r0:r1, columns q0:q1 occluded


def triple(v: int | tuple[int, ...], what: str) -> tuple[int, int, int]:
    t = (v, v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 3 or not all(isinstance(i, int) and not isinstance(i, bool) for i in t):
        raise AttributionError(f"{what} must be an int or (channels, height, width); got {v!r}")
    return int(t[0]), int(t[1]), int(t[2])


def _counts(dims: tuple[int, ...], win: tuple[int, ...], step: tuple[int, ...]) -> list[int]:
    return [math.ceil((d - w) / s) + 1 for d, w, s in zip(dims, win, step, strict=True)]


def windows(dims: torch.Size | tuple[int, ...], win: tuple[int, int, int], step: tuple[int, int, int]) -> list[Window]:
    """Captum's windows in row-major order, each (c0, c1, r0, r1, q0, q1), the last one cut at the border."""
    counts = _counts(tuple(dims), win, step)
    out = []
    for a in range(counts[0]):
        for i in range(counts[1]):
            for j in range(counts[2]):
                c0, r0, q0 = a * step[0], i * step[1], j * step[2]
                out.append((c0, min(c0 + win[0], dims[0]), r0, min(r0 + win[1], dims[1]), q0, min(q0 + win[2], dims[2])))
    return out


def mask(wins: list[Window], c: int, top: Tensor, h: int, w: int, left: Tensor | None = None) -> Tensor:
    """(N, C, h, w) bool: which cells of each window's view (rows top[n] + 0..h, cols left[n] + 0..w) it occludes."""
    t = torch.tensor(wins)  # (N, 6)
    ch = torch.arange(c)
    rr = top + torch.arange(h)  # (N, h)
    cc = (top * 0 if left is None else left) + torch.arange(w)  # (N, w)
    mc = (ch >= t[:, :1]) & (ch < t[:, 1:2])  # (N, C)
    mr = (rr >= t[:, 2:3]) & (rr < t[:, 3:4])  # (N, h)
    mq = (cc >= t[:, 4:5]) & (cc < t[:, 5:6])  # (N, w)
    return mc[:, :, None, None] & mr[:, None, :, None] & mq[:, None, None, :]


def chunks(items: list[Window], n: int) -> Iterator[list[Window]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def baseline_value(
    baseline: str | float | Tensor, c: int, normalize: tuple[list[float], list[float]] | None, dtype: torch.dtype
) -> Tensor:
    """The occluder's value per input channel (C,)."""
    if isinstance(baseline, str):
        if baseline != "grey":
            raise AttributionError(f"baseline must be 'grey', a number or a (C,) tensor; got {baseline!r}")
        value = torch.full((c,), 0.5, dtype=dtype)
        if normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=dtype) for v in normalize)
            value = (value - mean) / std
        return value
    if isinstance(baseline, bool):
        raise AttributionError(f"baseline must be 'grey', a number or a (C,) tensor; got {baseline!r}")
    value = torch.as_tensor(baseline, dtype=dtype)
    if value.dim() == 0:
        value = value.expand(c).clone()
    if value.shape != (c,) or not bool(torch.isfinite(value).all()):
        raise AttributionError(f"baseline must be one finite number or one per input channel ({c}); got {baseline!r}")
    return value
