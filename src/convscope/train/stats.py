"""The live dashboard's per-layer numbers for every block of a pass at once: a few fused reductions
and ONE host transfer (`analysis.stats.block_stats` computes the same numbers one layer at a time,
with one transfer per layer; tests/train/test_fused_stats.py checks the two agree).

    rows = [StatsInput.of(block, current_weight=...) for block in trace.values()]
    fused_stats(rows)       # {"conv1": {"a_min": 0.0, "a_max": 3.1, ..., "update_ratio": 2e-3}, ...}

Where the work goes (CPU, one thread): per-layer code paid a `.tolist()` per layer and a reshape
and cast per number; here the norms of all layers (dL/da, W, W - W_prev, dL/dW) are ONE
`torch._foreach_norm`, the differences W - W_prev one `_foreach_sub`, and the 0-d results are
stacked once and read back with one `.tolist()`. Minima, maxima, per-channel maxima (for the
dead-map count) and means stay one call per tensor: on CPU `_foreach_max` measured 2.7x slower
than `amax` on a (32, 16, 32, 32) map, and `aminmax` slower than `amin` + `amax`. What remains
is reading the maps (about five passes over each of z, a, dL/da).

ReLU blocks (a = max(z, 0)) read z's per-channel maxima and a's mean, no more: a's min and max
follow from z's (max(z_min, 0), max(z_max, 0)), and a map is all zero iff its z never exceeds 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class StatsInput:
    """One block's tensors for `fused_stats` (any may be None: its numbers are then absent).

    `weight` is W after the optimizer step, `previous_weight` the W the forward used (both or
    neither: update_ratio = ‖W − W_prev‖ / ‖W‖). `relu` says a = max(z, 0)."""

    name: str
    a: Tensor | None = None  # (B, C, H, W) or (B, F)
    z: Tensor | None = None  # same shape as a
    grad_a: Tensor | None = None
    weight: Tensor | None = None
    grad_weight: Tensor | None = None
    previous_weight: Tensor | None = None
    relu: bool = False


def _channel_dims(t: Tensor) -> tuple[int, ...]:
    return (0, *range(2, t.dim()))  # every dim but the channel dim 1


@torch.no_grad()
def fused_stats(rows: list[StatsInput]) -> dict[str, dict[str, float]]:
    """block_stats() of every row, computed together; layers with no numbers are left out."""
    keys: list[tuple[str, str]] = []
    values: list[Tensor] = []  # 0-d tensors, read back together at the end

    def put(name: str, key: str, v: Tensor) -> None:
        keys.append((name, key))
        values.append(v)

    norm_of: list[tuple[str, str, Tensor]] = []  # (layer, key, tensor): one _foreach_norm
    ratio_of: list[tuple[str, int, int]] = []  # (layer, index of ‖W−W_prev‖, index of ‖W‖) in norm_of
    moved: list[tuple[str, Tensor, Tensor]] = []  # (layer, W, W_prev): one _foreach_sub
    for r in rows:
        a, z = r.a, r.z
        if r.relu and a is not None and z is not None and a.dim() >= 2:
            hi = z.amax(dim=_channel_dims(z))  # (C,): the map is all 0 iff max z <= 0
            z_max, z_min = hi.max(), z.amin()
            put(r.name, "z_min", z_min)
            put(r.name, "z_max", z_max)
            put(r.name, "a_min", z_min.clamp_min(0))
            put(r.name, "a_max", z_max.clamp_min(0))
            put(r.name, "dead_fraction", (hi <= 0).float().mean())  # a NaN map is not dead
            put(r.name, "a_mean", a.mean())
            a = z = None
        if a is not None:
            if a.dim() >= 2:
                dims = _channel_dims(a)
                hi, lo = a.amax(dim=dims), a.amin(dim=dims)  # (C,) each
                put(r.name, "a_min", lo.min())
                put(r.name, "a_max", hi.max())
                put(r.name, "dead_fraction", ((hi == 0) & (lo == 0)).float().mean())
            else:
                put(r.name, "a_min", a.amin())
                put(r.name, "a_max", a.amax())
            put(r.name, "a_mean", a.mean())
        if z is not None:
            put(r.name, "z_min", z.amin())
            put(r.name, "z_max", z.amax())
        if r.grad_a is not None:
            put(r.name, "grad_a_min", r.grad_a.amin())
            put(r.name, "grad_a_max", r.grad_a.amax())
            norm_of.append((r.name, "grad_a_norm", r.grad_a))
        if r.weight is not None:
            norm_of.append((r.name, "weight_norm", r.weight))
            if r.previous_weight is not None:
                moved.append((r.name, r.weight, r.previous_weight))
        if r.grad_weight is not None:
            norm_of.append((r.name, "grad_weight_norm", r.grad_weight))
    if moved:
        diffs = torch._foreach_sub([w for _, w, _ in moved], [p for _, _, p in moved])
        w_index = {name: i for i, (name, key, _) in enumerate(norm_of) if key == "weight_norm"}
        for (name, _, _), d in zip(moved, diffs, strict=True):
            ratio_of.append((name, len(norm_of), w_index[name]))
            norm_of.append((name, "", d))
    if norm_of:
        norms = torch._foreach_norm([t for _, _, t in norm_of])
        for (name, key, _), v in zip(norm_of, norms, strict=True):
            if key:
                put(name, key, v)
        for name, moved_at, w_at in ratio_of:
            put(name, "update_ratio", norms[moved_at] / norms[w_at])
    if not values:
        return {}
    read = torch.stack(values).tolist()  # the one host transfer (all are 0-d; stack promotes dtypes)
    out: dict[str, dict[str, float]] = {}
    for (name, key), v in zip(keys, read, strict=True):
        out.setdefault(name, {})[key] = v
    return out
