"""Gradient health: update/weight ratios, vanishing/exploding gradients, saturated units — https://cs231n.github.io/neural-networks-3/#ratio

CS231n's checks while training: the ratio of an update's size to the weights' size should be
somewhere around 1e-3 (an SGD step is lr·dL/dW, so the ratio is lr·‖dL/dW‖/‖W‖); layers whose
relative gradient ‖dL/dW‖/‖W‖ is orders of magnitude below (vanishing) or above (exploding)
that of the layers after them learn at very different speeds; and a tanh/sigmoid unit sitting
on its asymptote passes almost no gradient (https://cs231n.github.io/neural-networks-1/#actfun).

    update_ratio(grad_norm=0.02, weight_norm=4.0, lr=0.01)   # 5e-05
    depth_flags([1e-6, 1e-2, 3e-2])                           # ["vanishing", None, None]
    saturated_count(a, "tanh")                                # (C,) values within 0.01 of ±1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from convscope.analysis.stats import chunked_norm

TYPICAL_UPDATE_RATIO = 1e-3  # CS231n: "somewhere around 1e-3"
UPDATE_RATIO_LOW = 1e-4  # 10× below the typical ratio: the lr may be too low for this layer
UPDATE_RATIO_HIGH = 1e-2  # 10× above: the lr may be too high for this layer
ASSUMED_LR = 0.01  # used when the caller gives no learning rate (and said so in the report)
DEPTH_RATIO = 1e3  # a layer's relative gradient 1000× below (above) a later layer's: vanishing (exploding)
SATURATION_MARGIN = 0.01  # a tanh value within 0.01 of ±1, a sigmoid value within 0.01 of 0 or 1
SATURATED_FILTER = 0.9  # a filter is saturated when this fraction of its values are

_TANH = frozenset({"Tanh", "tanh"})
_SIGMOID = frozenset({"Sigmoid", "sigmoid"})


def saturates(activation: str | None) -> bool:
    """Does this activation (a Block.activation name) have asymptotes: tanh or sigmoid?"""
    return activation in _TANH or activation in _SIGMOID


def saturated_count(a: Tensor, activation: str | None) -> Tensor | None:
    """Per channel, how many values of `a` lie within SATURATION_MARGIN of an asymptote.

    a: (B, C, ...) activation of a tanh (asymptotes ±1) or sigmoid (0 and 1) block.
    Returns (C,) int64, or None for an activation without asymptotes.
    """
    if activation in _TANH:
        near = a.abs() >= 1 - SATURATION_MARGIN  # (B, C, ...)
    elif activation in _SIGMOID:
        near = (a <= SATURATION_MARGIN) | (a >= 1 - SATURATION_MARGIN)
    else:
        return None
    return near.transpose(0, 1).reshape(a.shape[1], -1).sum(dim=1)  # (C,)


def update_ratio(*, grad_norm: float, weight_norm: float, lr: float) -> float:
    """‖lr · dL/dW‖ / ‖W‖: the size of one plain SGD step relative to the weights (inf for W = 0)."""
    if weight_norm == 0:
        return math.inf if grad_norm > 0 else 0.0
    return lr * grad_norm / weight_norm


@dataclass(frozen=True)
class DepthFlag:
    """A layer whose relative gradient is far from that of a later layer."""

    kind: str  # "vanishing" | "exploding"
    against: int  # index of the later layer it is compared with
    factor: float  # this layer's relative gradient / that layer's


def depth_flags(relative: Sequence[float]) -> list[DepthFlag | None]:
    """Compare each layer's relative gradient ‖dL/dW‖/‖W‖ (layers in forward order) with the
    layers after it: below 1/DEPTH_RATIO of the largest later one → vanishing; above DEPTH_RATIO×
    the smallest later one → exploding; a non-finite gradient is exploding on its own (against
    itself, factor inf). The last layer has nothing after it and is never flagged by ratio."""
    flags: list[DepthFlag | None] = []
    for i, r in enumerate(relative):
        if not math.isfinite(r):
            flags.append(DepthFlag("exploding", i, math.inf))
            continue
        later = [(j, v) for j, v in enumerate(relative) if j > i and math.isfinite(v)]
        flag: DepthFlag | None = None
        if later:
            j_hi, hi = max(later, key=lambda t: t[1])
            positive = [(j, v) for j, v in later if v > 0]
            if hi > 0 and r < hi / DEPTH_RATIO:
                flag = DepthFlag("vanishing", j_hi, r / hi)
            elif positive:
                j_lo, lo = min(positive, key=lambda t: t[1])
                if r > lo * DEPTH_RATIO:
                    flag = DepthFlag("exploding", j_lo, r / lo)
        flags.append(flag)
    return flags


def norm(t: Tensor) -> float:
    """Euclidean norm of all elements, in float64 (inf/NaN pass through), without a float64 copy."""
    return float(chunked_norm(t.detach(), dtype=torch.float64))
