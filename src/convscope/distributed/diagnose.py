"""diagnose under torchrun: each rank streams whole batches of its shard; the counts combine
exactly (dead counts, zero counts and sums by all_reduce, each filter's top input from the rank
holding its maximum), the sampling plans are the whole stream's — https://cs231n.github.io/neural-networks-1/#actfun

    diag = convscope.diagnose(model, dataset)    # inside a torchrun script: every rank gets the whole Diagnosis
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from convscope.analysis.diagnose import Diagnosis, Part
from convscope.analysis.diagnose import diagnose as diagnose_one
from convscope.analysis.stream import DEFAULT_BATCH, open_batches
from convscope.distributed.reduce import gather_rows
from convscope.distributed.shard import World, head, length_of, shard, world


def diagnose(model: nn.Module, data: Any, layers: list[str] | tuple[str, ...] | None = None, **kw: Any) -> Diagnosis:
    """`convscope.analysis.diagnose.diagnose` (same arguments), split among the ranks of an
    initialised process group; in one process, that function itself."""
    w = world()
    if w is None:
        return diagnose_one(model, data, layers, **kw)
    limit = kw.pop("limit", None)
    if limit is not None:
        data = head(data, limit)
    batch = data.batch_size or 1 if isinstance(data, DataLoader) else kw.get("batch_size") or DEFAULT_BATCH
    kw.setdefault("data_name", open_batches(data, None if isinstance(data, DataLoader) else batch)[2])
    part, start = shard(data, w, batch)
    sizes = gather_rows(torch.tensor([length_of(part)], dtype=torch.int64))
    if bool((sizes == 0).any()):
        raise ValueError(
            f"{int(sizes.sum())} inputs in batches of {batch} cannot feed {w.size} ranks: give at least one batch per rank"
        )
    where = Part(first_batch=start // batch, first_input=start, total=int(sizes.sum()), combine=lambda s: combine(s, w))
    return diagnose_one(model, part, layers, part=where, **kw)


def combine(state: dict[str, tuple[str, Tensor]], w: World) -> dict[str, Tensor]:
    """Each {key: (op, tensor)} combined over the ranks, in one order on every rank: "sum",
    "max", "min", or "owner:KEY" — per row of KEY's tensor, the value of the first rank holding
    its maximum (the rank with the lowest dataset indices, as one process keeps the first)."""
    out: dict[str, Tensor] = {}
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    for key in sorted(state):
        op, t = state[key]
        if op in ops:
            t = t.clone()
            dist.all_reduce(t, op=ops[op])
            out[key] = t
    owners: dict[str, Tensor] = {}  # reference key → this rank owns each row
    for key in sorted(state):
        op, t = state[key]
        if not op.startswith("owner:"):
            continue
        ref = key[: key.rfind("\x00") + 1] + op.removeprefix("owner:")  # the same layer's KEY
        if ref not in owners:  # the first rank whose value is the maximum, per row
            mine, best = state[ref][1], out[ref]
            rank = torch.full(mine.shape, w.rank, dtype=torch.int64, device=mine.device)
            first = torch.where(mine == best, rank, torch.full_like(rank, w.size))
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
            owners[ref] = first == w.rank
        keep = owners[ref].view(-1, *([1] * (t.dim() - 1)))
        held = torch.where(keep, t, torch.zeros_like(t))
        dist.all_reduce(held, op=dist.ReduceOp.SUM)  # one owner per row: the sum is its value
        out[key] = held
    return out
