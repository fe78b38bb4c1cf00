"""t-SNE of layer codes under torchrun: each rank computes the codes of its shard of the sample,
gathered in dataset order to every rank; rank 0 maps them — https://www.jmlr.org/papers/v9/vandermaaten08a.html

    emb = embedding(Embedding(model, layer="fc7"), dataset, n=5000)   # rank 0: the map; others: None
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from convscope.analysis.embedding import Embedding, EmbeddingResult, class_names
from convscope.analysis.stream import Progress
from convscope.distributed.reduce import gather_rows
from convscope.distributed.shard import length_of, shard, world


def embedding(
    emb: Embedding,
    data: Any,
    n: int = 5000,
    seed: int = 0,
    batch_size: int | None = 64,
    transform: Callable[[Tensor], Tensor] | None = None,
    progress: Progress | None = None,
    *,
    perplexity: float = 30.0,
) -> EmbeddingResult | None:
    """`emb.run(data, n, seed, ...)` with the codes split among the ranks of an initialised process
    group: the same sample, the same codes in the same order, the same seeded map, on rank 0
    (None on the other ranks, which do not run t-SNE). In one process, `emb.run` itself."""
    w = world()
    if w is None:
        return emb.run(data, n, seed, batch_size, transform, progress, perplexity=perplexity)
    sampled, indices = emb.sample(data, n, seed, perplexity=perplexity)
    batch = (sampled.batch_size or 1) if isinstance(sampled, DataLoader) else batch_size or 64
    t0 = time.perf_counter()
    part, _ = shard(sampled, w, batch)
    mine = length_of(part)
    if mine:
        codes, labels = emb.codes(
            part, mine, transform=transform, batch_size=None if isinstance(part, DataLoader) else batch, progress=progress
        )
    else:  # fewer batches than ranks: this rank sends nothing (the shapes from one image, dropped)
        codes, labels = emb.codes(sampled, 1, transform=transform, batch_size=1)
        codes, labels = codes[:0], labels[:0]
    codes = gather_rows(codes)  # (n, D) float16 in dataset order: the shards are contiguous
    every = gather_rows(torch.from_numpy(labels)).numpy()
    if not w.main:
        return None
    return emb.fit(codes, every, indices, class_names(sampled), seed=seed, perplexity=perplexity,
                   seconds={"codes": time.perf_counter() - t0})  # fmt: skip
