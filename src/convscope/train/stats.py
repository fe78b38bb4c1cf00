"""The live dashboard's per-layer numbers for every block of a pass at once: a few fused reductions
and ONE host transfer (`analysis.stats.block_stats` computes the same numbers one layer at a time,
with one transfer per layer; tests/train/test_fused_stats.py checks the two agree).

    seen = Reductions(is_relu)     # a statistics step: Probe(..., tap=seen.tap, overwrite=seen.overwrite,
                                   #                          grad_tap=seen.grad_tap) reduces as the pass runs
    rows = [StatsInput(name, block.a, block.z, ..., seen=seen.pop(block)) for name, block in trace.items()]
    fused_stats(rows)       # {"conv1": {"a_min": 0.0, "a_max": 3.1, ..., "update_ratio": 2e-3}, ...}

Where the work goes (CPU): passes over memory (on convnetjs-cifar at batch 32, about 0.1-0.25 ms
per cold pass over a (32, 16, 32, 32) map) plus ~3 µs per torch call. So: a statistics step's maps
are reduced by `Reductions` as the pass makes them (in the CPU cache), and a snapshot step's kept
maps here, by the same functions; the norms of all layers (W, W - W_prev, dL/dW, and a kept
dL/da) are ONE `torch._foreach_norm`, the differences W - W_prev one `_foreach_sub` (a big W's
through a small buffer: `chunked_norm`); z gives its minimum and maximum in one `aminmax` pass,
a dL/da reduced as it comes gives its three numbers in one pass over memory (`range_and_norm`,
chunk by chunk when big); every result is viewed 1-D, joined by one `cat` and read back with one
`.tolist()`; what follows from those numbers (a's min and max, the dead-map fraction, the mean,
the update ratio) is worked out in Python on the host. A ReLU block (a = max(z, 0)) reads z once
(aminmax) and a once (per-channel sums over contiguous rows of H·W): a's min and max are
max(z_min, 0) and max(z_max, 0), a map is all zero iff its sum is 0 (a >= 0), and the mean is the
sum of the sums over the count. All of it runs on one torch thread (`one_thread`).
"""

from __future__ import annotations

import functools
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

import torch
from torch import Tensor

from convscope.analysis.stats import CHUNK, chunked_norm, flat, range_and_norm
from convscope.capture import Block

P = ParamSpec("P")
R = TypeVar("R")


def one_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` under no_grad, with torch on one thread. The reductions here are passes over memory:
    one thread moves them as fast as two (‖W‖ of resnet18-shaped: 1.9 ms wall either way) for
    half the CPU or less (1.9 ms against 5.7 ms: the second thread's share, its wait and spin);
    and the recorder's budget is CPU time. Setting the thread count costs ~0.2 µs."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
        if threads != 1:
            torch.set_num_threads(1)
        torch.set_grad_enabled(False)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_grad_enabled(grad)
            if threads != 1:
                torch.set_num_threads(threads)

    return run


def _timed(fn: Callable[Concatenate[Reductions, P], R]) -> Callable[Concatenate[Reductions, P], R]:
    """A `Reductions` callback whose wall time is added to its `spent`."""

    @functools.wraps(fn)
    def run(reductions: Reductions, /, *args: P.args, **kwargs: P.kwargs) -> R:
        t0 = reductions.clock()
        try:
            return fn(reductions, *args, **kwargs)
        finally:
            reductions.spent += reductions.clock() - t0

    return run


@dataclass
class APart:
    """An activation map reduced (tensors, not read yet): a ReLU map's per-channel sums (`relu`),
    else its min, max, dead-map fraction and mean."""

    parts: list[Tensor]
    relu: bool
    count: int  # elements of the map


@dataclass
class Seen:
    """A block's maps reduced as a statistics step's probe saw them made (`Reductions`)."""

    z_range: tuple[Tensor, Tensor] | None = None  # z's (min, max)
    a: APart | None = None
    grad_a: tuple[Tensor, Tensor, Tensor] | None = None  # dL/da's (min, max, norm)


@dataclass(frozen=True)
class StatsInput:
    """One block's tensors for `fused_stats` (any may be None: its numbers are then absent).

    `weight` is W after the optimizer step, `previous_weight` the W the forward used (both or
    neither: update_ratio = ‖W − W_prev‖ / ‖W‖). `relu` says a = max(z, 0). `seen`: what the
    probe already reduced of z, a and dL/da as they were made (used instead of those tensors)."""

    name: str
    a: Tensor | None = None  # (B, C, H, W) or (B, F)
    z: Tensor | None = None  # same shape as a
    grad_a: Tensor | None = None
    weight: Tensor | None = None
    grad_weight: Tensor | None = None
    previous_weight: Tensor | None = None
    relu: bool = False
    seen: Seen | None = None


class Reductions:
    """A statistics step's probe callbacks (`Probe(tap=, overwrite=, grad_tap=)`): each block's a,
    z and dL/da are reduced as the pass makes them, while they are in the CPU cache, instead of
    being read cold after the step (on resnet18-shaped at batch 8, ~74 MB of a, ~104 MB of z and
    ~74 MB of dL/da a step); dL/da is then not kept at all, so the backward reuses its memory.
    z's range is read just before an in-place op writes over z (an in-place ReLU, a residual
    `+=`: where the probe would copy it), else at a's tap (z just read by the activation), else
    when the next block starts (z just read by what follows it). `pop(block)` hands them to
    `StatsInput.seen`; what the pass never handed over (the last block's z) is read there. A
    block's kept z is let go once its activation's map is reduced (`block.z` is then None): else it
    would live to the end of the pass, and the pass's next maps would take fresh memory instead
    of z's, still in the cache (on convnetjs-cifar at batch 32 a statistics step's pass then costs
    ~0.3 ms more: docs/speed.md).
    `spent`: the seconds (by `clock`) its callbacks took (inside the training loop: the recorder
    charges at least that much probe overhead; `take_spent()` reads and resets it), the statistics
    probe's copy of W before the optimizer step included (`copy_starts`, `copy_ends`)."""

    def __init__(self, relu: Callable[[Block], bool], clock: Callable[[], float] = time.perf_counter) -> None:
        self._relu = relu
        self.clock = clock
        self.spent = 0.0
        self._of: weakref.WeakKeyDictionary[Block, Seen] = weakref.WeakKeyDictionary()
        self._last: weakref.ref[Block] | None = None  # the block of the last tap
        self._copy_t0: float | None = None  # `copy_starts`' clock reading
        self._threads: int | None = None  # torch's threads while the copy runs on one

    def _seen(self, block: Block) -> Seen:
        seen = self._of.get(block)
        if seen is None:
            seen = self._of[block] = Seen()
        return seen

    def take_spent(self) -> float:
        spent, self.spent = self.spent, 0.0
        return spent

    def copy_starts(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """A global optimizer pre-hook added just before the statistics probe's own, which copies
        the W it keeps before the step writes into it (capture/cow.py): that copy is probe work in
        the loop, timed into `spent` until `copy_ends` (added just after the probe's; global
        pre-hooks run in the order added). It runs on one torch thread, as the reductions do
        (`one_thread`): a pass over memory, as fast on one, and all of its CPU on `clock`."""
        self.threads_back()  # (a copy that raised)
        threads = torch.get_num_threads()
        if threads != 1:
            self._threads = threads
            torch.set_num_threads(1)
        self._copy_t0 = self.clock()

    def copy_ends(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        t0, self._copy_t0 = self._copy_t0, None
        if t0 is not None:
            self.spent += self.clock() - t0
        self.threads_back()

    def threads_back(self) -> None:
        """torch's threads as before `copy_starts` (idempotent; the recorder calls it on disarming,
        for an optimizer step that raised in the probe's copy)."""
        threads, self._threads = self._threads, None
        if threads is not None:
            torch.set_num_threads(threads)

    @_timed
    def tap(self, block: Block, field: str, t: Tensor) -> None:
        last = self._last() if self._last is not None else None
        if last is not block:
            if last is not None and last.z is not None:
                self._z_range(last)  # a block with no activation: its z has just been read
            self._last = weakref.ref(block)
        if field == "a":
            self._a(block, t)

    @one_thread
    def _a(self, block: Block, a: Tensor) -> None:
        seen = self._z_range(block)
        seen.a = _a_part(a.detach(), self._relu(block) and seen.z_range is not None)
        block.z = None  # read: let go now, so the pass reuses its memory while in the CPU cache

    def _z_range(self, block: Block) -> Seen:
        """z's range from the kept z (intact: an in-place write over it went through `overwrite`)."""
        seen = self._seen(block)
        z = block.z
        if seen.z_range is None and z is not None:
            seen.z_range = _aminmax(z)
        return seen

    @_timed
    def overwrite(self, block: Block, field: str, t: Tensor) -> bool:
        if field != "z":
            return False  # the probe's usual copy
        seen = self._seen(block)
        if seen.z_range is None:
            seen.z_range = _aminmax(t)
        return True  # no copy of z kept

    @_timed
    @one_thread
    def grad_tap(self, block: Block, field: str, g: Tensor) -> None:
        if field == "grad_a":
            self._seen(block).grad_a = range_and_norm(flat(g))

    def pop(self, block: Block) -> Seen | None:
        self._last = None
        return self._of.pop(block, None)


@one_thread
def _aminmax(t: Tensor) -> tuple[Tensor, Tensor]:
    lo, hi = torch.aminmax(flat(t.detach()))
    return lo, hi


def _a_part(a: Tensor, relu: bool) -> APart:
    """A map's reductions: per-channel sums when a = max(z, 0) and z's range is known (a's min
    and max follow from it), else min, max, dead-map fraction and mean."""
    if relu and a.dim() >= 2:
        return APart([_channel_sums(a)], True, a.numel())
    if a.dim() >= 2:
        a = a.contiguous()  # per-channel max of a channels-last map: 1.6 ms -> 0.3 ms copy + amax
        dims = _channel_dims(a)
        hi, lo = a.amax(dim=dims), a.amin(dim=dims)  # (C,) each
        return APart([lo.min(), hi.max(), ((hi == 0) & (lo == 0)).float().mean(), a.mean()], False, a.numel())
    return APart([*torch.aminmax(a), a.mean()], False, a.numel())


_A_KEYS = {4: ("a_min", "a_max", "dead_fraction", "a_mean"), 3: ("a_min", "a_max", "a_mean")}


def _channel_dims(t: Tensor) -> tuple[int, ...]:
    return (0, *range(2, t.dim()))  # every dim but the channel dim 1


@one_thread
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
        seen = r.seen or Seen()
        z_range = seen.z_range if seen.z_range is not None else None if r.z is None else _aminmax(r.z)
        a = seen.a if seen.a is not None else None if r.a is None else _a_part(r.a, r.relu and z_range is not None)
        if a is not None and a.relu and z_range is not None:  # (a ReLU map's sums come with z's range)
            put(r.name, [*z_range, *a.parts], partial(_relu_numbers, a.count))
            z_range = None
        elif a is not None:
            put(r.name, a.parts, partial(_named, _A_KEYS[len(a.parts)]))
        if z_range is not None:
            put(r.name, list(z_range), partial(_named, ("z_min", "z_max")))
        if seen.grad_a is not None:
            put(r.name, list(seen.grad_a), partial(_named, ("grad_a_min", "grad_a_max", "grad_a_norm")))
        elif r.grad_a is not None:
            put(r.name, list(torch.aminmax(flat(r.grad_a))), partial(_named, ("grad_a_min", "grad_a_max")))
            norm_of.append((r.name, "grad_a_norm", r.grad_a))
        if r.weight is not None:
            norm_of.append((r.name, "weight_norm", r.weight))
            if r.previous_weight is not None:
                moved.append((r.name, r.weight, r.previous_weight))
        if r.grad_weight is not None:
            norm_of.append((r.name, "grad_weight_norm", r.grad_weight))
    ratio_of: list[tuple[str, int, int]] = []  # (layer, index of ‖W−W_prev‖, index of ‖W‖) in norm_of
    w_index = {name: i for i, (name, key, _) in enumerate(norm_of) if key == "weight_norm"}
    small = [(name, w, p) for name, w, p in moved if w.numel() <= CHUNK]
    if small:  # small weights: their differences at once (one _foreach_sub), normed with the rest
        diffs = torch._foreach_sub([w for _, w, _ in small], [p for _, _, p in small])
        for (name, _, _), d in zip(small, diffs, strict=True):
            ratio_of.append((name, len(norm_of), w_index[name]))
            norm_of.append((name, "", d))
    if norm_of:
        norms = torch._foreach_norm([t for _, _, t in norm_of])
        parts.extend(v.reshape(1) for v in norms)
    big = [(name, w, p) for name, w, p in moved if w.numel() > CHUNK]  # ‖W − W_prev‖ with no W-sized difference
    for at, (name, w, p) in enumerate(big, start=len(norm_of)):  # read back after the norms
        ratio_of.append((name, at, w_index[name]))
        parts.append(chunked_norm(w, p).reshape(1))
    if not parts:
        return {}
    read = torch.cat(parts).tolist()  # the one host transfer (cat promotes dtypes)
    out: dict[str, dict[str, float]] = {}
    at = 0
    for name, n, numbers in finish:
        out.setdefault(name, {}).update(numbers(read[at : at + n]))
        at += n
    if norm_of or big:
        got = read[at:]
        for (name, key, _), v in zip(norm_of, got[: len(norm_of)], strict=True):
            if key:
                out.setdefault(name, {})[key] = v
        for name, moved_at, w_at in ratio_of:
            out[name]["update_ratio"] = _ratio(got[moved_at], got[w_at])
    return out


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
