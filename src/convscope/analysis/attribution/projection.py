"""Projection: one image's projections back to pixels, as `convscope project` computes them.

Plain data (filled by `convscope.project.project`, drawn by `convscope.render.projection_report`):
the layer's strongest units with their projections (ZF Fig. 1/2), and every class method for
the top-3 classes. In Jupyter it draws itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from torch import Tensor

from convscope.analysis.attribution.base import AttributionError, AttributionMap


@dataclass
class Unit:
    """One feature map of the layer and its strongest activation's projections."""

    channel: int
    value: float  # its strongest activation on this image
    position: tuple[int, int] | None  # (i, j) of that activation in the map; None for a dense layer
    projections: dict[str, AttributionMap]  # method → (1, C, H, W)
    box: tuple[int, int, int, int] | None = None  # (y0, x0, y1, x1): the unit's receptive field, clipped


@dataclass
class ClassMaps:
    """Every class method for one class."""

    target: int
    name: str
    probability: float
    maps: dict[str, AttributionMap]  # method → (1, C, H, W) or (1, 1, H, W)


@dataclass
class Projection:
    """Everything `write_projection_report` draws; displays itself in Jupyter."""

    model: str
    image_name: str
    image: npt.NDArray[np.uint8]  # (H, W, 3) as fed
    x: Tensor  # (1, C, H, W)
    layer: str
    layer_tensor: str  # which tensor of the layer: "a of block conv5 (after relu5)"
    maps: Tensor  # (C, h, w) or (C,): the layer's activations on this image
    units: list[Unit]
    classes: list[ClassMaps]
    methods: list[str]
    rules: dict[str, dict[str, str]]  # method → activation → rule applied
    seconds: dict[str, float] = field(default_factory=dict)

    #: set by convscope.render (which this layer may not import): Projection → HTML
    display: ClassVar[Callable[[Projection], str] | None] = None

    def _repr_html_(self) -> str | None:
        return None if Projection.display is None else Projection.display(self)


def strongest_units(
    maps: Tensor, *, top: int, channel: int | None, layer: str, what: str = "channel"
) -> list[tuple[int, float, tuple[int, int] | None]]:
    """(channel, its maximum, (i, j) of it or None for a dense layer) for one `channel`, or the
    `top` maps with the largest maximum, strongest first (ties: the lower channel). `maps` is one
    example's (C, h, w) or (C,); `what` names the channel in the out-of-range error."""
    c = maps.shape[0]
    peak = maps.reshape(c, -1).amax(dim=1)  # (C,)
    if channel is not None:
        if isinstance(channel, bool) or not 0 <= channel < c:
            raise AttributionError(f"{what} {channel} is out of range for layer {layer!r}: 0..{c - 1}")
        order = [channel]
    else:
        order = peak.argsort(descending=True, stable=True)[:top].tolist()
    out = []
    for k in order:
        pos = divmod(int(maps[k].reshape(-1).argmax()), maps.shape[2]) if maps.dim() == 3 else None
        out.append((k, float(peak[k]), pos))
    return out

