"""Overlay: a heat map (saliency, occlusion, a feature map) blended over the image it explains.

The heat (H', W') is normalised like a map in `grid` (unsigned: 0 -> darkest sequential colour,
max -> brightest; signed: diverging around 0), resized bilinearly to the image's (H, W), coloured,
and blended: out = (1 - alpha) * image + alpha * colour. A constant heat map is marked with the
same magenta hatch as a constant map in a grid: it carries no information about where.

    overlay(photo_uint8_hwc, saliency_map, alpha=0.5).save("saliency.png")
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from .colormap import apply, mark_constant
from .normalize import as_array, normalize
from .picture import Box, Picture


def overlay(
    image: npt.ArrayLike,
    heat: npt.ArrayLike,
    *,
    alpha: float = 0.5,
    signed: bool = False,
) -> Picture:
    """Blend `heat` (H', W') over `image` (H, W, 3) or (H, W) uint8; `cells[0]` is the image."""
    img = _image(image)
    h, w = img.shape[:2]
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    hm = as_array(heat, what="overlay heat")
    if hm.ndim != 2 or hm.size == 0:
        raise ValueError(f"overlay heat must be one map shaped (H', W'); got shape {hm.shape}")
    n = normalize(hm[None], mode="map", signed=signed)
    values = n.values[0]  # (H', W') in [0, 1]
    if values.shape != (h, w):  # bilinear on values (linear, so it commutes with normalising)
        resized = Image.fromarray(values.astype(np.float32)).resize(
            (w, h), Image.Resampling.BILINEAR
        )
        values = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
    colour = apply(values, "diverging" if signed else "sequential").astype(np.float64)  # (H, W, 3)
    out = np.rint((1.0 - alpha) * img + alpha * colour).astype(np.uint8)
    if n.constant[0]:
        mark_constant(out)
    return Picture(out, cells=[Box(0, 0, w, h)])


def _image(image: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The image as float (H, W, 3) with values 0..255; only uint8 (H, W, 3) / (H, W) accepted."""
    if callable(getattr(image, "detach", None)):  # a torch.Tensor, without importing torch
        image = image.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise ValueError(
            f"overlay image must be uint8 shaped (H, W, 3) or (H, W); got {arr.dtype} {tuple(np.shape(image))} "
            "(a float CHW tensor x: convert with (x.permute(1, 2, 0).clamp(0, 1) * 255).byte())"
        )
    return arr.astype(np.float64)
