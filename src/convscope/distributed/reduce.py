"""Merging the ranks' partial results exactly: sums by all_reduce, rows gathered in rank order
(= dataset order, the shards being contiguous), top-k hits by the deterministic merge of
`TopPatchesResult.merge`. Only tensors travel between ranks (no pickled objects)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from convscope.analysis.stream import DEFAULT_BATCH, Progress
from convscope.analysis.units import LayerHits, TopPatches, TopPatchesResult
from convscope.distributed.shard import World, length_of, shard, world


def all_sum(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every rank's tensors added together (integer counts stay exact), on every rank."""
    if world() is None:
        return tensors
    out = {}
    for key, t in tensors.items():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[key] = t
    return out


def gather_rows(t: Tensor) -> Tensor:
    """Every rank's rows (first dimension, any length) concatenated in rank order, on every rank."""
    w = world()
    if w is None:
        return t
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(w.size)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    most = max(counts)
    padded = torch.zeros((most, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


def merge_top_patches(parts: list[TopPatchesResult]) -> TopPatchesResult:
    """The parts' hits merged in order (parts over disjoint dataset indices)."""
    if not parts:
        raise ValueError("nothing to merge: no part has any input")
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    return merged


def top_patches(
    tp: TopPatches,
    data: Any,
    batch_size: int | None = None,
    progress: Progress | None = None,
    *,
    first_index: int = 0,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> TopPatchesResult:
    """`tp.run(data, ...)`, each rank over its shard, the hits merged on every rank: equal to one
    process's result (same values, dataset indices and positions)."""
    w = world()
    if w is None:
        return tp.run(data, batch_size, progress, first_index=first_index, transform=transform)
    part, start = shard(data, w, batch_size or DEFAULT_BATCH)
    sizes = gather_rows(torch.tensor([length_of(part)], dtype=torch.int64))
    if bool((sizes == 0).any()):
        raise ValueError(
            f"{int(sizes.sum())} inputs in batches of {batch_size or DEFAULT_BATCH} cannot feed {w.size} ranks:"
            " give at least one batch per rank (or a smaller batch size)"
        )
    mine = tp.run(part, batch_size, progress, first_index=first_index + start, transform=transform)
    return _gather_hits(mine, w)


def _gather_hits(mine: TopPatchesResult, w: World) -> TopPatchesResult:
    counts = gather_rows(torch.tensor([mine.inputs], dtype=torch.int64)).tolist()
    per_rank: list[dict[str, LayerHits]] = [{} for _ in range(w.size)]
    for name, hits in mine.layers.items():
        k = torch.tensor([hits.values.shape[1]], dtype=torch.int64)
        ks = gather_rows(k).tolist()  # hits per map on each rank (fewer than k on a short shard)
        values = gather_rows(hits.values.T.contiguous()).T  # (C, sum of ks)
        indices = gather_rows(hits.indices.T.contiguous()).T
        positions = gather_rows(hits.positions.transpose(0, 1).contiguous()).transpose(0, 1)
        at = 0
        for r, kr in enumerate(ks):
            sl = slice(at, at + kr)
            per_rank[r][name] = LayerHits(
                name, values[:, sl].contiguous(), indices[:, sl].contiguous(), positions[:, sl].contiguous(), hits.field
            )
            at += kr
    parts = [TopPatchesResult(layers, k=mine.k, inputs=n) for layers, n in zip(per_rank, counts, strict=True)]
    return merge_top_patches(parts)
