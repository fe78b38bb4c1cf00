"""Occlusion under torchrun: the occluder positions split among the ranks — https://arxiv.org/abs/1311.2901

    grid = DistributedOcclusion(model).sensitivity(x, window=16, stride=8, layer="conv5")

Each rank runs a contiguous run of whole batches of positions (the batches one process runs, so
the numbers are bit-identical), and every rank gets all positions' outputs by all_gather; in one
process it is `Occlusion` itself. Approximate mode splits each of its passes the same way.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from convscope.analysis.occlusion import Occlusion
from convscope.analysis.occlusion.occlusion import Progress
from convscope.analysis.occlusion.windows import Window
from convscope.distributed.reduce import gather_rows
from convscope.distributed.shard import batch_bounds, world


class DistributedOcclusion(Occlusion):
    """`Occlusion` whose positions are split among the ranks of an initialised process group."""

    def _occluded(
        self,
        x: Tensor,
        base: Tensor,
        masks: list[Window],
        method: str | None,
        batch: int,
        tap: tuple[str | None, int | None] | None,
        progress: Progress | None = None,
    ) -> tuple[tuple[Tensor, Tensor | None], dict[str, Any]]:
        w = world()
        if w is None or not masks:
            return super()._occluded(x, base, masks, method, batch, tap, progress)
        start, stop = batch_bounds(len(masks), batch, w.rank, w.size)
        if stop > start:
            (out, feat), how = super()._occluded(x, base, masks[start:stop], method, batch, tap, progress)
        else:  # fewer batches than ranks: this rank runs one position for the shapes and sends none
            (out, feat), how = super()._occluded(x, base, masks[:1], method, batch, tap, None)
            out, feat = out[:0], None if feat is None else feat[:0]
        out = gather_rows(out)  # (M, K) in position order: the shards are contiguous
        feat = None if feat is None else gather_rows(feat)
        return (out, feat), {**how, "positions": len(masks), "ranks": w.size}
