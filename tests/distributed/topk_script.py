"""Under torchrun: TopPatches over a dataset whose size is not a multiple of the world size;
rank 0 saves the merged result. Args: out_path n k."""

import sys

import torch
import torch.distributed as dist
from torch import nn

from convscope.analysis.units import TopPatches
from convscope.distributed import batch_bounds, init_from_env, top_patches


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU())


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    X = torch.rand(n, 3, 20, 20, generator=g)
    cut = batch_bounds(n, 4, 1, 2)[0]  # rank 1's first input (batches of 4)
    if 0 < cut < n:  # a tie across the two shards: the merge must break it as one process does
        X[cut - 1] = X[cut]
    return X, torch.arange(n) % 3


if __name__ == "__main__":
    out, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    w = init_from_env()
    assert w is not None and w.size == 2
    result = top_patches(TopPatches(net(), layers=["1", "4"], k=k), data(n), batch_size=4)
    if w.main:
        result.save(out)
    dist.destroy_process_group()
