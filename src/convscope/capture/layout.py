"""Channels-last bookkeeping: which permutation turns a recorded tensor into (B, C, H, W).

Blocks are shown channels-first (DESIGN.md §1). ConvNeXt-style code moves channels last
(`x.permute(0, 2, 3, 1)`), applies LayerNorm and Linear layers over C, and moves them back.
A tensor the probe follows carries `to_first`: the dims to pass to `permute` to get it
channels-first (None when it already is). A Linear's output on a (B, H, W, C) input has
`CHANNELS_LAST`; `x.permute(q)` of a followed tensor gets `after_permute(to_first, q)`.
"""

from __future__ import annotations

from typing import Any

Perm = tuple[int, ...] | None

#: (B, H, W, C) → (B, C, H, W)
CHANNELS_LAST: tuple[int, ...] = (0, 3, 1, 2)


def permute_dims(args: tuple[Any, ...], kwargs: dict[str, Any], ndim: int) -> tuple[int, ...] | None:
    """The dims of a `permute` call (`t.permute(0, 2, 3, 1)`, `t.permute((0, 2, 3, 1))`,
    `torch.permute(t, dims=...)`), non-negative; None when they are not a permutation."""
    dims: Any = kwargs.get("dims", args[1:])
    if len(dims) == 1 and isinstance(dims[0], list | tuple):
        dims = dims[0]
    if not all(isinstance(d, int) for d in dims) or len(dims) != ndim or ndim == 0:
        return None
    out = tuple(d % ndim for d in dims)
    return out if sorted(out) == list(range(ndim)) else None


def after_permute(to_first: Perm, q: tuple[int, ...]) -> Perm:
    """`to_first` of `t.permute(q)` when `t.permute(to_first)` is channels-first."""
    n = len(q)
    t = to_first if to_first is not None else tuple(range(n))
    if len(t) != n:
        return None
    # t.permute(q)'s dim i is t's dim q[i]; t's dim j is channels-first dim p[j], p = t's inverse
    p = [0] * n
    for i, d in enumerate(t):
        p[d] = i
    composed = [p[q[i]] for i in range(n)]  # new dim i = channels-first dim composed[i]
    inverse = [0] * n
    for i, d in enumerate(composed):
        inverse[d] = i
    result = tuple(inverse)
    return None if result == tuple(range(n)) else result
