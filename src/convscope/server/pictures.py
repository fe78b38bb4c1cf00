"""Snapshots -> PNG bytes with convscope.render, the same pictures the inspect report draws.

  snapshot_png(t, kind, norm=..., scale=..., sample=...)  maps -> grid, filters ->
      filters (colour pictures when C_in == 3: the first layer), dense vectors and
      matrices drawn as such; z and gradients always signed (diverging around 0), a and x
      signed only when they have negatives
  za_png(z, a)        z | a side by side on ONE 0-centred scale m = max(|z|, |a|) + its colour bar
  image_png(x)        a (C, H, W) image in [0, 1] as plain pixels (test images, uploads)

Nothing here knows about HTTP or the store: tensors in, bytes out.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import torch
from PIL import Image

from convscope.render import Picture, filters, grid, legend

Norm = Literal["map", "layer", "global"]
NORMS: tuple[Norm, ...] = ("map", "layer", "global")

FILTER_KINDS = ("weight", "grad_weight")
MAP_KINDS = ("x", "conv", "z", "a", "grad_z", "grad_a", "input")
KINDS = (*MAP_KINDS, *FILTER_KINDS)
SIGNED_KINDS = ("conv", "z", "grad_z", "grad_a", "weight", "grad_weight")  # 0 in the middle
IMAGE_MIN_SIDE = 96  # test images are scaled up (integer factor) to at least this many px


def signed_for(kind: str) -> bool | None:
    """True for signed kinds; None (decide from the data) for a, x and input."""
    return True if kind in SIGNED_KINDS else None


def snapshot_png(
    t: torch.Tensor, kind: str, *, norm: Norm, scale: float | None = None, sample: int = 0
) -> bytes:
    """The picture of one snapshot `t` of `kind` (see the module docstring) as PNG bytes."""
    return snapshot_picture(t, kind, norm=norm, scale=scale, sample=sample).png()


def snapshot_picture(
    t: torch.Tensor, kind: str, *, norm: Norm, scale: float | None = None, sample: int = 0
) -> Picture:
    if norm != "global":
        scale = None
    if kind in FILTER_KINDS:
        if t.dim() == 1:  # a bias-like vector: one row of units
            return grid(t, signed=True, norm=norm, scale=scale)
        return filters(t, signed=True, norm=norm, scale=scale)
    signed = signed_for(kind)
    if t.dim() == 2:  # (B, F): a dense layer's units
        return grid(t, signed=signed, norm=norm, scale=scale, sample=sample, dense=True)
    return grid(t, signed=signed, norm=norm, scale=scale, sample=sample)


def magnitude(t: torch.Tensor) -> float:
    """max |v| of a snapshot (0.0 for an empty one)."""
    return float(t.detach().abs().max()) if t.numel() else 0.0


def za_png(z: torch.Tensor, a: torch.Tensor, *, sample: int = 0) -> bytes:
    """z and a = f(z) of one block next to each other, both with the same 0-centred scale."""
    m = max(magnitude(z), magnitude(a)) or 1.0  # all zero: any scale draws it white
    dense = z.dim() == 2
    left = grid(
        z,
        signed=True,
        norm="global",
        scale=m,
        sample=sample,
        dense=dense,
        title="z (pre-activation)",
    )
    right = grid(
        a, signed=True, norm="global", scale=m, sample=sample, dense=dense, title="a = f(z)"
    )
    bar = legend(-m, m, signed=True, title="one scale for z and a")
    return Picture.vstack([Picture.hstack([left, right], pad=16), bar]).png()


def image_png(x: torch.Tensor) -> bytes:
    """A (C, H, W) image with values in [0, 1] (C = 1 or 3) as a PNG, scaled up without blur."""
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"an image must be (C, H, W) with C 1 or 3, got {tuple(x.shape)}")
    arr = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # (C, H, W)
    hwc = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr
    rgb = np.ascontiguousarray(hwc.transpose(1, 2, 0))  # (H, W, 3)
    factor = max(1, -(-IMAGE_MIN_SIDE // max(rgb.shape[:2])))
    rgb = rgb.repeat(factor, axis=0).repeat(factor, axis=1)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def encode_png(x: torch.Tensor) -> bytes:
    """A (C, H, W) image in [0, 1] as an RGB PNG at its own size (what the trainer receives)."""
    arr = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # (C, H, W)
    hwc = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(hwc.transpose(1, 2, 0))).save(buf, format="PNG")
    return buf.getvalue()
