"""Saliency (Simonyan, Vedaldi & Zisserman 2013): https://arxiv.org/abs/1312.6034

    Saliency(model).attribute(x, target=3)                 # |d score_3 / dx|, shaped like x
    Saliency(model).attribute(x, layer="conv2", channel=5)  # the plain gradient of one feature map

The plain gradient of the class score (or of one feature map) with respect to the input;
`abs=True` (the default, as Captum) gives its magnitude. Simonyan et al. draw the maximum
over colour channels: `convscope.render.attribution` does that.
"""

from __future__ import annotations

from torch import Tensor

from convscope.analysis.attribution.base import Attribution, AttributionMap, Position, Target


class Saliency(Attribution):
    """The input gradient, plain autograd (no rule at the activations)."""

    method = "saliency"

    def attribute(
        self,
        x: Tensor,
        target: Target = None,
        *,
        abs: bool = True,
        layer: str | None = None,
        channel: int | None = None,
        position: Position = None,
    ) -> AttributionMap:
        grad, meta = self._gradient(x, target, layer=layer, channel=channel, position=position)
        meta["abs"] = abs
        return AttributionMap.wrap(grad.abs() if abs else grad, meta, x)  # (B, C, H, W)
