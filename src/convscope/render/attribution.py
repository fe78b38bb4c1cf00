"""Attribution pictures: a projection back to pixels drawn the way its paper drew it.

    attribution(GuidedBackprop(model).attribute(x, target=3))           # signed RGB, grey = 0
    attribution(Saliency(model).attribute(x, 3), image=photo)           # max over channels, heat
    attribution(GradCAM(model, layer="layer4").attribute(x, 3), image=photo)   # heat over the photo

Styles (chosen from the map's `.meta["method"]` unless `style=` says):
- "rgb": a signed 3-channel map as ZF/Springenberg show projections: 0.5 + 0.5·v / max|v| per
  channel, so grey is 0 and colour shows which input channel the signal favours;
- "magnitude": max over channels of |v| (Simonyan et al.'s saliency), sequential colours;
- "heat": a one-channel map (Grad-CAM) blended over `image` when given.
An all-zero map gets the magenta hatch every convscope picture uses for "no information".
Small inputs are scaled up by whole pixels (crisp), to at least `size` on the long side.
Importing this module teaches `AttributionMap` to draw itself in Jupyter.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from convscope.analysis.attribution import AttributionMap

from .colormap import apply, mark_constant
from .grid import _blocks, _factor
from .normalize import as_array
from .overlay import overlay
from .picture import Box, Picture

Style = Literal["rgb", "magnitude", "heat"]
_BY_METHOD: dict[str, Style] = {"saliency": "magnitude", "gradcam": "heat"}


def style_of(meta: dict[str, object], channels: int) -> Style:
    """The paper's way to draw this method's map."""
    if channels == 1:
        return "heat"
    method = str(meta.get("method", ""))
    if method == "smoothgrad":
        method = str(meta.get("base", ""))
    return _BY_METHOD.get(method, "rgb" if channels == 3 else "magnitude")


def attribution(
    values: npt.ArrayLike,
    *,
    image: npt.ArrayLike | None = None,
    sample: int = 0,
    style: Style | None = None,
    size: int = 128,
    alpha: float = 0.5,
) -> Picture:
    """One example's map (B, C, H, W) → a Picture; `image` (H, W, 3) uint8 for the heat style."""
    meta = getattr(values, "meta", {})
    arr = as_array(values, what="attribution")
    if arr.ndim != 4:
        raise ValueError(f"attribution maps are shaped (B, C, H, W); got {arr.shape}")
    if not 0 <= sample < arr.shape[0]:
        raise ValueError(f"sample={sample} is out of range for a batch of {arr.shape[0]}")
    v = arr[sample]  # (C, H, W)
    chosen = style or style_of(meta, v.shape[0])
    if chosen == "heat":
        heat = v.max(axis=0) if v.shape[0] > 1 else v[0]  # (h, w)
        if image is not None:
            pic = overlay(image, heat, alpha=alpha)
            return _upscale(pic.array, size)
        return _upscale(_sequential(heat), size)
    if chosen == "magnitude":
        return _upscale(_sequential(np.abs(v).max(axis=0)), size)
    if v.shape[0] != 3:
        raise ValueError(f"style 'rgb' needs 3 channels; this map has {v.shape[0]}")
    peak = float(np.abs(v).max())
    rgb01 = 0.5 + 0.5 * v / peak if peak > 0 else np.full_like(v, 0.5)
    out = np.rint(255 * np.clip(rgb01, 0, 1)).astype(np.uint8).transpose(1, 2, 0)  # (H, W, 3)
    if peak == 0:
        mark_constant(out)
    return _upscale(out, size)


def input_image(x: npt.ArrayLike, *, sample: int = 0, size: int = 128) -> Picture:
    """The input as a picture, min–max scaled (when its de-normalisation is not known)."""
    arr = as_array(x, what="input")
    v = arr[sample] if arr.ndim == 4 else arr  # (C, H, W)
    lo, hi = float(v.min()), float(v.max())
    v01 = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    rgb = np.rint(255 * v01).astype(np.uint8).transpose(1, 2, 0)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return _upscale(rgb[:, :, :3], size)


def _sequential(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    peak = float(values.max()) if values.size else 0.0
    lo = float(values.min()) if values.size else 0.0
    span = peak - lo
    v01 = (values - lo) / span if span > 0 else np.zeros_like(values)
    rgb = apply(v01, "sequential")
    if span == 0:
        mark_constant(rgb)
    return rgb


def _upscale(rgb: npt.NDArray[np.uint8], size: int) -> Picture:
    h, w = rgb.shape[:2]
    f = _factor(max(h, w), None, size)
    big = _blocks(rgb[None], f)[0]
    return Picture(big, cells=[Box(0, 0, big.shape[1], big.shape[0])])


def _display(m: AttributionMap) -> bytes:
    """Jupyter: the input (min–max scaled) beside the map, for the first example."""
    pics = []
    x = getattr(m, "input", None)
    image = None
    if x is not None and x.dim() == 4:
        pics.append(input_image(x))
        image = input_image(x, size=1).array
    pics.append(attribution(m, image=image))
    return Picture.hstack(pics).png()


AttributionMap.display = _display
