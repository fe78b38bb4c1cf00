"""Image -> tensor conversions shared by every convscope dataset.

`to_chw_float` turns a uint8 (H, W, 3) image into a float (3, H, W) tensor in [0, 1];
`prepare` also resizes (Pillow bilinear, antialiased when shrinking) and converts to grey
by luminance; `conform` does the same for a tensor that is already (C, H, W) float.
Sizes are always (H, W), the torch order.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from convscope.data.errors import DataError

__all__ = ["LUMA", "conform", "luminance", "prepare", "to_chw_float"]

# ITU-R BT.601 luma weights for R, G, B (the weights Pillow's convert("L") uses).
LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)


def _check_image(img: np.ndarray, where: str) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{where}: expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise DataError(
            f"{where}: expected a uint8 (H, W, 3) image, got {img.dtype} {tuple(img.shape)}"
        )


def _check_size_channels(size: tuple[int, int], channels: int, where: str) -> None:
    if len(size) != 2 or min(size) <= 0:
        raise DataError(f"{where}: size must be (H, W) with positive ints, got {size}")
    if channels not in (1, 3):
        raise DataError(f"{where}: channels must be 1 or 3, got {channels}")


def to_chw_float(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1] (value / 255)."""
    _check_image(img, "to_chw_float")
    chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # (3, H, W) uint8
    return chw.to(torch.float32) / 255.0


def luminance(x: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) RGB -> (..., 1, H, W) grey = 0.299 R + 0.587 G + 0.114 B."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)  # (3, 1, 1)
    return (x * w).sum(dim=-3, keepdim=True)  # (..., 1, H, W)


def prepare(img: np.ndarray, *, size: tuple[int, int], channels: int, crop: bool = False) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (channels, size[0], size[1]) in [0, 1].

    Resizes with Pillow's bilinear filter (antialiased when shrinking) when the size
    differs, then keeps RGB (channels=3) or takes the luminance (channels=1). `crop`: first
    the centre of the image in the target's aspect (`centre_crop`), so nothing is stretched.
    """
    _check_image(img, "prepare")
    _check_size_channels(size, channels, "prepare")
    h, w = int(size[0]), int(size[1])
    if crop:
        img = centre_crop(img, (h, w))
    if img.shape[:2] != (h, w):
        img = np.asarray(
            Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR)
        )  # (h, w, 3) uint8; Pillow takes (W, H)
    x = to_chw_float(img)  # (3, h, w)
    return luminance(x) if channels == 1 else x


def centre_crop(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The largest centred part of uint8 (H, W, 3) `img` in the aspect of `size` (h, w): a
    120×80 picture for a square input keeps its middle 80×80 (a view, no copy)."""
    ih, iw = img.shape[:2]
    h, w = size
    if ih * w > iw * h:  # taller than the target: cut rows
        keep = max(1, round(iw * h / w))
        top = (ih - keep) // 2
        return img[top : top + keep]
    keep = max(1, round(ih * w / h))
    left = (iw - keep) // 2
    return img[:, left : left + keep]


def conform(x: torch.Tensor, *, size: tuple[int, int], channels: int) -> torch.Tensor:
    """float (C, H, W) with C in {1, 3} -> float (channels, size[0], size[1]).

    Grey is repeated to RGB, RGB becomes luminance, and the size is changed with
    torch's bilinear interpolation (antialiased when shrinking).
    """
    _check_size_channels(size, channels, "conform")
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise DataError(f"conform: expected a (C, H, W) tensor with C 1 or 3, got {tuple(x.shape)}")
    x = x.to(torch.float32)
    if x.shape[0] == 3 and channels == 1:
        x = luminance(x)  # (1, H, W)
    elif x.shape[0] == 1 and channels == 3:
        x = x.expand(3, -1, -1).clone()  # (3, H, W)
    if tuple(x.shape[1:]) != (size[0], size[1]):
        x = F.interpolate(
            x[None], size=(size[0], size[1]), mode="bilinear", align_corners=False, antialias=True
        )[0]  # (channels, size[0], size[1])
    return x
