"""Frozen configuration dataclasses, one per side of convscope, with a comment on each default."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Every tensor a block can hold; `CaptureConfig.keep` picks a subset.
FIELDS: tuple[str, ...] = (
    "x",  # the block's input
    "conv",  # W*x + b, before any norm
    "z",  # pre-activation: what enters the nonlinearity
    "a",  # activation map = feature map
    "weight",  # the filters W
    "bias",  # b
    "grad_weight",  # dL/dW
    "grad_bias",  # dL/db
    "grad_z",  # dL/dz
    "grad_a",  # dL/da
)


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """What a `Probe` keeps, and where."""

    keep: frozenset[str] = field(default_factory=lambda: frozenset(FIELDS))  # all fields
    device: torch.device | str | None = None  # move kept tensors here (e.g. "cpu"); None = leave them
    dtype: torch.dtype | None = None  # e.g. torch.float16 to halve memory; None = the model's dtype

    def __post_init__(self) -> None:
        unknown = sorted(set(self.keep) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) to keep: {unknown}; valid: {list(FIELDS)}")
        if self.dtype is not None and not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {self.dtype}")
