"""Filter roughness: are a layer's filters smooth or noise? — https://cs231n.github.io/understanding-cnn/

CS231n: "the weights are useful to visualize because well-trained networks usually display nice
and smooth filters without any noisy patterns. Noisy patterns can be an indicator of a network
that hasn't been trained for long enough, or possibly a very low regularization strength that
may have led to overfitting." This file turns that look into one number per filter:

    roughness(w) = mean over neighbouring weight pairs of (w_i − w_j)²  /  (2 · mean of w²)

over each filter's spatial axes (pairs never cross input channels, so colour contrast between
the R, G, B kernels does not count as noise). For white noise — independent zero-mean weights,
as any standard initialisation draws them — the expected value is exactly 1 whatever the
kernel size; a constant filter scores 0, a smooth blob or a slow edge well below 1, and a
checkerboard 2. An all-zero filter has no shape: NaN.

    r = roughness(model.conv1.weight)     # (C_out,) — 1.0 ≈ looks like its random init
"""

from __future__ import annotations

import torch
from torch import Tensor

#: A filter with roughness at or above this looks like noise. White noise scores 1 on average;
#: trained first-layer filters score far lower (calibration in tests/analysis/test_diagnose_calibration.py).
NOISY_ROUGHNESS = 0.8


def roughness(weight: Tensor) -> Tensor:
    """Per output filter, mean squared neighbour difference over twice the mean square weight.

    weight: (C_out, C_in, k1, ..., kn) conv filters (any number of spatial axes). Returns
    (C_out,) float64; NaN for an all-zero filter. Fails when no spatial axis has 2 or more taps
    (1×1 filters have no neighbours, so no smoothness).
    """
    if not isinstance(weight, Tensor):
        raise TypeError(f"roughness needs a tensor, got {type(weight).__name__}")
    if weight.dim() < 3:
        raise ValueError(
            f"roughness needs conv filters (C_out, C_in, k, ...), got shape {tuple(weight.shape)}"
        )
    w = weight.detach().to(torch.float64)  # (C_out, C_in, k1, ..., kn)
    axes = [d for d in range(2, w.dim()) if w.shape[d] >= 2]
    if not axes:
        raise ValueError(
            f"roughness needs a spatial axis with at least 2 taps, got filters of shape {tuple(w.shape)}"
        )
    c_out = w.shape[0]
    diff_sq = torch.zeros(c_out, dtype=torch.float64)  # (C_out,) sum of (w_i - w_j)^2
    pairs = 0  # neighbouring pairs per filter
    for d in axes:
        diff = torch.diff(w, dim=d)  # (C_out, C_in, ..., k_d - 1, ...)
        diff_sq += diff.pow(2).reshape(c_out, -1).sum(dim=1)
        pairs += diff[0].numel()
    mean_sq = w.pow(2).reshape(c_out, -1).mean(dim=1)  # (C_out,)
    return (diff_sq / pairs) / (2 * mean_sq)  # 0/0 = NaN for an all-zero filter
