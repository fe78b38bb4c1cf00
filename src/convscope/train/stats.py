"""The live dashboard's per-layer numbers for every block of a pass at once: a few fused reductions
and ONE host transfer (`analysis.stats.block_stats` computes the same numbers one layer at a time,
with one transfer per layer; tests/train/test_fused_stats.py checks the two agree).

    rows = [StatsInput.of(block, current_weight=...) for block in trace.values()]
    fused_stats(rows)       # {"conv1": {"a_min": 0.0, "a_max": 3.1, ..., "update_ratio": 2e-3}, ...}

Where the work goes (CPU, one thread): the maps are read cold (the backward has moved on), so
the cost is passes over memory (on convnetjs-cifar at batch 32, about 0.1-0.25 ms per pass over a
(32, 16, 32, 32) map) plus ~3 µs per torch call. So: the norms of all layers (dL/da, W, W - W_prev,
dL/dW) are ONE `torch._foreach_norm`, the differences W - W_prev one `_foreach_sub`; z and dL/da
give their minimum and maximum in one `aminmax` pass each; every result is viewed 1-D, joined by
one `cat` and read back with one `.tolist()`; what follows from those numbers (a's min and max, the
dead-map fraction, the mean, the update ratio) is worked out in Python on the host. A ReLU block
(a = max(z, 0)) reads z once (aminmax) and a once (per-channel sums over contiguous rows of H·W):
a's min and max are max(z_min, 0) and max(z_max, 0), a map is all zero iff its sum is 0 (a >= 0),
and the mean is the sum of the sums over the count. Four passes where there were six: measured
cold, 1.28 ms for all of convnetjs-cifar's blocks at batch 32 where the earlier code took 1.45 ms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from convscope.analysis.stats import flat


@dataclass(frozen=True)
class StatsInput:
    """One block's tensors for `fused_stats` (any may be None: its numbers are then absent).

    `weight` is W after the optimizer step, `previous_weight` the W the forward used (both or
    neither: update_ratio = ‖W − W_prev‖ / ‖W‖). `relu` says a = max(z, 0). `z_range`: z's
    (min, max), read before an in-place op wrote over z (then `z` is None)."""

    name: str
    a: Tensor | None = None  # (B, C, H, W) or (B, F)
    z: Tensor | None = None  # same shape as a
    grad_a: Tensor | None = None
    weight: Tensor | None = None
    grad_weight: Tensor | None = None
    previous_weight: Tensor | None = None
    relu: bool = False
    z_range: tuple[Tensor, Tensor] | None = None


def _channel_dims(t: Tensor) -> tuple[int, ...]:
    return (0, *range(2, t.dim()))  # every dim but the channel dim 1


@torch.no_grad()
def fused_stats(rows: list[StatsInput]) -> dict[str, dict[str, float]]:
    """block_stats() of every row, computed together; layers with no numbers are left out."""
    parts: list[Tensor] = []  # 1-D views of the results, read back together at the end
    finish: list[tuple[str, int, Callable[[list[float]], dict[str, float]]]] = []  # (layer, n, numbers)

    def put(name: str, values: list[Tensor], numbers: Callable[[list[float]], dict[str, float]]) -> None:
        n = 0
        for v in values:
            parts.append(v.reshape(-1))
            n += v.numel()
        finish.append((name, n, numbers))

    norm_of: list[tuple[str, str, Tensor]] = []  # (layer, key, tensor): one _foreach_norm
    moved: list[tuple[str, Tensor, Tensor]] = []  # (layer, W, W_prev): one _foreach_sub
    for r in rows:
        a, z_range = r.a, _range_of(r.z, r.z_range)
        if r.relu and a is not None and z_range is not None and a.dim() >= 2:
            put(r.name, [*z_range, _channel_sums(a)], partial(_relu_numbers, a.numel()))
            a = z_range = None
        if a is not None:
            if a.dim() >= 2:
                a = a.contiguous()  # per-channel max of a channels-last map: 1.6 ms -> 0.3 ms copy + amax
                dims = _channel_dims(a)
                hi, lo = a.amax(dim=dims), a.amin(dim=dims)  # (C,) each
                put(r.name, [lo.min(), hi.max(), ((hi == 0) & (lo == 0)).float().mean(), a.mean()],
                    partial(_named, ("a_min", "a_max", "dead_fraction", "a_mean")))  # fmt: skip
            else:
                put(r.name, [*torch.aminmax(a), a.mean()], partial(_named, ("a_min", "a_max", "a_mean")))
        if z_range is not None:
            put(r.name, list(z_range), partial(_named, ("z_min", "z_max")))
        if r.grad_a is not None:
            put(r.name, list(torch.aminmax(flat(r.grad_a))), partial(_named, ("grad_a_min", "grad_a_max")))
            norm_of.append((r.name, "grad_a_norm", r.grad_a))
        if r.weight is not None:
            norm_of.append((r.name, "weight_norm", r.weight))
            if r.previous_weight is not None:
                moved.append((r.name, r.weight, r.previous_weight))
        if r.grad_weight is not None:
            norm_of.append((r.name, "grad_weight_norm", r.grad_weight))
    ratio_of: list[tuple[str, int, int]] = []  # (layer, index of ‖W−W_prev‖, index of ‖W‖) in norm_of
    if moved:
        diffs = torch._foreach_sub([w for _, w, _ in moved], [p for _, _, p in moved])
        w_index = {name: i for i, (name, key, _) in enumerate(norm_of) if key == "weight_norm"}
        for (name, _, _), d in zip(moved, diffs, strict=True):
            ratio_of.append((name, len(norm_of), w_index[name]))
            norm_of.append((name, "", d))
    if norm_of:
        norms = torch._foreach_norm([t for _, _, t in norm_of])
        parts.extend(v.reshape(1) for v in norms)
    if not parts:
        return {}
    read = torch.cat(parts).tolist()  # the one host transfer (cat promotes dtypes)
    out: dict[str, dict[str, float]] = {}
    at = 0
    for name, n, numbers in finish:
        out.setdefault(name, {}).update(numbers(read[at : at + n]))
        at += n
    if norm_of:
        got = read[at:]
        for (name, key, _), v in zip(norm_of, got, strict=True):
            if key:
                out.setdefault(name, {})[key] = v
        for name, moved_at, w_at in ratio_of:
            out[name]["update_ratio"] = _ratio(got[moved_at], got[w_at])
    return out


def _range_of(z: Tensor | None, z_range: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor] | None:
    """z's (min, max) in one pass, or as read before an in-place op wrote over z."""
    if z is None:
        return z_range
    lo, hi = torch.aminmax(flat(z))
    return lo, hi


def _channel_sums(a: Tensor) -> Tensor:
    """(C,) sums of a (B, C, ...) map over all but the channel dim: contiguous rows of H·W summed
    first (one pass that reads memory in order), then the B rows of each channel."""
    acc = a.dtype if a.dtype in (torch.float32, torch.float64) else torch.float32  # no float16 overflow
    if a.dim() > 2 and a.is_contiguous():
        b, c = a.shape[0], a.shape[1]
        return a.view(b * c, -1).sum(1, dtype=acc).view(b, c).sum(0)
    if a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last):  # (B, H, W, C) in memory
        return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).sum(0, dtype=acc)
    return a.sum(dim=_channel_dims(a), dtype=acc)


def _clamp0(v: float) -> float:
    return 0.0 if v < 0 else v  # max(v, 0) that keeps NaN (torch's clamp_min)


def _relu_numbers(n: int, read: list[float]) -> dict[str, float]:
    """A ReLU block's numbers from z's min and max and a's per-channel sums (a = max(z, 0) >= 0:
    a map is all zero iff its sum is 0; a NaN map sums to NaN, so it is not dead)."""
    z_min, z_max, *sums = read
    dead = sum(s == 0 for s in sums) / len(sums)
    return {"z_min": z_min, "z_max": z_max, "a_min": _clamp0(z_min), "a_max": _clamp0(z_max),
            "dead_fraction": dead, "a_mean": sum(sums) / n}  # fmt: skip


def _named(keys: tuple[str, ...], read: list[float]) -> dict[str, float]:
    return dict(zip(keys, read, strict=True))


def _ratio(num: float, den: float) -> float:
    """num / den as torch divides floats (x/0 is ±inf, 0/0 NaN), not raising."""
    if den == 0:
        return math.nan if num == 0 or num != num else math.copysign(math.inf, num)
    return num / den
