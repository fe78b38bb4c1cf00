"""Summary numbers of an activation map or gradient: min, max, mean, sparsity (ConvNetJS's max/min
activation readout; CS231n's fraction of zero activations).

    map_stats(trace["conv1"].a)   # MapStats(min=0.0, max=3.2, mean=0.41, std=.., sparsity=0.53, ...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MapStats:
    """Statistics over every element of a tensor (all examples, channels and positions)."""

    min: float
    max: float
    mean: float
    std: float
    sparsity: float  # fraction of elements exactly 0 (a ReLU's "off" units)
    numel: int
    dead_channels: int  # channels (dim 1) that are 0 everywhere in the tensor

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def map_stats(t: Tensor) -> MapStats:
    """Stats of a (B, C, H, W) or (B, F) tensor; NaN/Inf are an error, not a statistic."""
    if t.numel() == 0:
        raise ValueError("cannot summarise an empty tensor")
    v = t.detach().float()
    if not torch.isfinite(v).all():
        raise ValueError("tensor contains NaN or Inf")
    zero = v == 0
    dead = int(zero.transpose(0, 1).reshape(v.shape[1], -1).all(dim=1).sum()) if v.dim() >= 2 else 0
    return MapStats(
        min=float(v.min()),
        max=float(v.max()),
        mean=float(v.mean()),
        std=float(v.std(unbiased=False)),
        sparsity=float(zero.float().mean()),
        numel=v.numel(),
        dead_channels=dead,
    )
