"""Region arithmetic of incremental occlusion (Krypton, Nakandala et al., SIGMOD 2019): https://arxiv.org/abs/1807.05675

    r0, n = affected(start, h, k, s, p, d, size)   # output rows a conv/pool changes, from changed input rows
    win = gather(clean_padded, value, r0, c0, lr, lc, pad)   # (N, C, lr, lc) windows, patches written in
    full = paste(clean, value)                     # (N, C, H, W) the clean map with each patch written in

A `Value` is one graph node's value for a batch of N occluder positions; the functions here
say which rows/columns of a map change (`affected`, `union`; `truncate` for the approximate
mode) and move patches in and out of clean maps. incremental.py applies them node by node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Value:
    """One node's value for a batch of N occluder positions.

    kind "clean": equal to the clean pass for every position (nothing stored);
    "patch": equal to the clean pass except the (N, C, h, w) tensor `t` at rows r[n].., cols c[n]..;
    "full": `t` is the whole batched value (N, ...).
    """

    kind: str
    t: Tensor | None = None
    r: Tensor | None = None  # (N,) row starts of the patch (kind "patch")
    c: Tensor | None = None  # (N,) column starts


def affected(start: Tensor, h: int, k: int, s: int, p: int, d: int, size: int) -> tuple[Tensor, int]:
    """Output starts (N,) and one common length of the outputs changed by input rows [start, start + h)."""
    lo = torch.div(start + p - d * (k - 1) + s - 1, s, rounding_mode="floor").clamp(min=0)  # ceil
    hi = torch.div(start + h - 1 + p, s, rounding_mode="floor").clamp(max=size - 1)
    n = int((hi - lo + 1).max())
    n = max(1, min(n, size))
    return lo.clamp(max=size - n), n


def truncate(start: Tensor, n: int, tau: float, size: int) -> tuple[Tensor, int]:
    """At most ceil(τ · size) outputs, centred on the changed region (approximate mode)."""
    cap = max(1, math.ceil(tau * size))
    if n <= cap:
        return start, n
    return (start + (n - cap) // 2).clamp(min=0, max=size - cap), cap


def union(regions: list[tuple[Tensor, int]], size: int) -> tuple[Tensor, int]:
    """Starts (N,) and one common length covering every region [r, r + h)."""
    lo = torch.stack([r for r, _ in regions]).amin(dim=0)
    hi = torch.stack([r + h for r, h in regions]).amax(dim=0)
    n = min(int((hi - lo).max()), size)
    return lo.clamp(min=0, max=size - n), n


def gather(clean: Tensor, v: Value, r0: Tensor, c0: Tensor, lr: int, lc: int, pad: tuple[int, int]) -> Tensor:
    """Rows r0[n] .. r0[n] + lr, cols c0[n] .. c0[n] + lc of each position's map.

    clean: (1, C, H', W'), the clean map already padded by `pad` (rows, cols); the window
    coordinates are in that padded frame; v: the value (clean or patch, in the unpadded frame).
    Returns (N, C, lr, lc). Plain slices per position (faster here than one advanced-index gather).
    """
    rows, cols = r0.tolist(), c0.tolist()
    out = torch.stack([clean[0, :, r : r + lr, c : c + lc] for r, c in zip(rows, cols, strict=True)])
    if v.kind == "patch":
        assert v.t is not None and v.r is not None and v.c is not None
        h, w = v.t.shape[-2:]
        for n, (r, c, pr, pc) in enumerate(zip(rows, cols, v.r.tolist(), v.c.tolist(), strict=True)):
            top, left = pr + pad[0] - r, pc + pad[1] - c  # the patch's corner in the window
            y0, y1 = max(top, 0), min(top + h, lr)
            x0, x1 = max(left, 0), min(left + w, lc)
            if y0 < y1 and x0 < x1:
                out[n, :, y0:y1, x0:x1] = v.t[n, :, y0 - top : y1 - top, x0 - left : x1 - left]
    return out  # (N, C, lr, lc)


def paste(clean: Tensor, v: Value) -> Tensor:
    """The full batched maps (N, C, H, W): the clean map with each position's patch written in."""
    assert v.t is not None and v.r is not None and v.c is not None
    n_pos, _, h, w = v.t.shape
    full = clean.expand(n_pos, *clean.shape[1:]).clone()  # (N, C, H, W)
    rr = v.r[:, None] + torch.arange(h)  # (N, h)
    cc = v.c[:, None] + torch.arange(w)  # (N, w)
    n = torch.arange(n_pos)[:, None, None]
    full[n, :, rr[:, :, None], cc[:, None, :]] = v.t.permute(0, 2, 3, 1)
    return full
