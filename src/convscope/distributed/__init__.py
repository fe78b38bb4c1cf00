"""Dataset-scale analyses across `torch.distributed` ranks (torchrun), merged exactly.

    torchrun --nproc-per-node 2 -m convscope units --out units/

Each rank streams one contiguous run of whole batches of the data (`shard`: no padding, so no
input is counted twice, and every batch is the one a single process reads); partial results merge exactly with collectives (`reduce`: counts and sums by all_reduce,
top-k hits gathered then merged in rank order, codes gathered in dataset order), and only rank 0
writes. Without an initialised process group every function here is the single-process one.
"""

from convscope.distributed.diagnose import diagnose
from convscope.distributed.occlusion import DistributedOcclusion
from convscope.distributed.reduce import all_sum, gather_rows, merge_top_patches, top_patches
from convscope.distributed.shard import World, batch_bounds, bounds, init_from_env, shard, world

__all__ = [
    "DistributedOcclusion", "World", "all_sum", "batch_bounds", "bounds", "diagnose", "gather_rows", "init_from_env", "merge_top_patches", "shard",
    "top_patches", "world",
]  # fmt: skip
