"""Finite-difference image gradient ∂x/∂u, ∂x/∂v (Sobel) — https://en.wikipedia.org/wiki/Sobel_operator

A property of an IMAGE (how brightness changes from pixel to pixel), not of the network: it is
what "gradient" means in classic image processing, and is NOT the weight gradient dL/dW that
training follows. convscope shows both side by side so the two are never confused.

    gu, gv = image_gradient(x)      # x (C, H, W) → two (C, H, W) tensors, u = across (columns), v = down (rows)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Sobel kernels divided by 8, so a ramp x = c·u has ∂x/∂u = c exactly (cross-correlation order)
_SOBEL_U = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
_SOBEL_V = _SOBEL_U.t().contiguous()


def image_gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """Central-difference (Sobel) derivatives along u (columns, left→right) and v (rows, top→bottom),
    per channel, with edge replication so the output has the input's size. A ramp x = c·u
    gives ∂x/∂u = c inside the image (c/2 on the replicated border) and ∂x/∂v = 0."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"image_gradient takes an image (C, H, W) or (H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("image contains NaN or Inf")
    c = x.shape[0]
    img = F.pad(x.detach().float().unsqueeze(1), (1, 1, 1, 1), mode="replicate")  # (C, 1, H+2, W+2)
    ku = _SOBEL_U.to(img).view(1, 1, 3, 3)
    kv = _SOBEL_V.to(img).view(1, 1, 3, 3)
    gu = F.conv2d(img, ku).view(c, *x.shape[1:])  # (C, H, W)
    gv = F.conv2d(img, kv).view(c, *x.shape[1:])
    return gu, gv
