"""Which part of the data a rank streams: contiguous shards with no padding (torchrun).

`DistributedSampler` pads the last shard with repeats so every rank gets as many inputs; a
repeated input would be counted twice in a dead-filter tally and could fill two top-k slots.
Here the data is cut into the batches one process would read (`batch` inputs each) and rank r of
w streams the contiguous batches [B·r/w, B·(r+1)/w): no input twice, shards differ by at most one
batch, every batch holds the same inputs as in one process (so a convolution rounds alike and
per-batch numbers such as ‖dL/dW‖ are the same), and results keep dataset indices
(`first_index`): merged, they equal one process's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset


@dataclass(frozen=True)
class World:
    """The running process group: this process's rank and the number of ranks."""

    rank: int
    size: int

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes reports and runs."""
        return self.rank == 0


def world() -> World | None:
    """The initialised process group with more than one rank, else None (one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    size = dist.get_world_size()
    return World(dist.get_rank(), size) if size > 1 else None


def init_from_env() -> World | None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR in the
    environment): gloo on CPU, nccl when this rank has a GPU. None when not launched by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    if not dist.is_available():
        raise RuntimeError("torchrun started convscope but this torch build has no torch.distributed")
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and "LOCAL_RANK" in os.environ
        if cuda:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous shard of n inputs."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in a world of {size}")
    if n < 0:
        raise ValueError(f"the data has a negative length {n}")
    return n * rank // size, n * (rank + 1) // size


def batch_bounds(n: int, batch: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of the inputs in rank's contiguous run of whole batches of n inputs."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    b0, b1 = bounds(-(-n // batch), rank, size)
    return min(b0 * batch, n), min(b1 * batch, n)


def shard(data: Any, w: World, batch: int) -> tuple[Any, int]:
    """(this rank's part of data, the dataset index of its first input), cut at whole batches of
    `batch` inputs (a DataLoader's own batch size wins). data as the analyses take it: a Dataset
    with a length, a sequential DataLoader, an (X, y) pair of tensors or X."""
    if isinstance(data, DataLoader):
        if not isinstance(data.sampler, SequentialSampler) or data.batch_sampler is None:
            raise ValueError(
                "under torchrun give a Dataset or a sequential DataLoader (shuffle=False): each rank"
                f" takes a contiguous shard of it, got a DataLoader drawing with {type(data.sampler).__name__}"
            )
        start, stop = batch_bounds(_length(data.dataset), data.batch_size or 1, w.rank, w.size)
        part = DataLoader(
            Subset(data.dataset, range(start, stop)), batch_size=data.batch_size, shuffle=False,
            num_workers=data.num_workers, collate_fn=data.collate_fn, pin_memory=data.pin_memory,
            drop_last=data.drop_last,
        )
        return part, start
    if isinstance(data, Tensor):
        start, stop = batch_bounds(int(data.shape[0]), batch, w.rank, w.size)
        return data[start:stop], start
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        start, stop = batch_bounds(int(data[0].shape[0]), batch, w.rank, w.size)
        return (data[0][start:stop], data[1][start:stop]), start
    if isinstance(data, Dataset):
        start, stop = batch_bounds(_length(data), batch, w.rank, w.size)
        return Subset(data, range(start, stop)), start
    raise TypeError(
        f"data must be a Dataset, a DataLoader, an (X, y) pair of tensors or a tensor X, got {type(data).__name__}"
    )


def _length(ds: Any) -> int:
    try:
        return len(ds)
    except TypeError:
        raise ValueError(
            f"under torchrun the data must have a length to be split among ranks; {type(ds).__name__} has none"
        ) from None


def length_of(data: Any) -> int:
    """The number of inputs of data as `shard` takes it."""
    if isinstance(data, Tensor):
        return int(data.shape[0])
    if isinstance(data, tuple | list):
        return int(data[0].shape[0])
    return _length(data.dataset if isinstance(data, DataLoader) else data)


def head(data: Any, limit: int) -> Any:
    """data's first `limit` inputs (all of them when it has fewer), in the same form."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    n = min(limit, length_of(data))
    if isinstance(data, Tensor):
        return data[:n]
    if isinstance(data, tuple | list):
        return (data[0][:n], data[1][:n])
    if isinstance(data, DataLoader):
        return DataLoader(
            Subset(data.dataset, range(n)), batch_size=data.batch_size, shuffle=False, num_workers=data.num_workers,
            collate_fn=data.collate_fn, pin_memory=data.pin_memory, drop_last=data.drop_last,
        )  # fmt: skip
    return Subset(data, range(n))
