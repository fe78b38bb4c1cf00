"""Deconvnet projection (Zeiler & Fergus 2013, "Visualizing and understanding"): https://arxiv.org/abs/1311.2901

    Deconvnet(model).attribute(x, layer="conv5", channel=5, position="max")   # ZF Fig. 2
    Deconvnet(model).attribute(x, target=3)                                   # from a class score

ZF: "to examine a given convnet activation, we set all other activations in the layer to
zero and pass the feature maps as input to the attached deconvnet layers": unpool with the
max-pooling switches recorded in the forward, rectify, filter with the transposed filters,
down to pixels. That is the backward pass with one change: every ReLU passes max(g, 0),
whatever its input was (backprop would pass [z > 0] · g). Max-pool backward *is* unpooling
with the switches, conv backward *is* the transposed filter. With overlapping pooling
(ZF's 3/2) two windows can share a switch: the backward sums both, as the adjoint should.
The seed is the chosen activations with their values (`position`: "max", an (i, j), or None
for the whole map; `channel=None`: the whole layer).
"""

from __future__ import annotations

from convscope.analysis.attribution.base import GradientMethod


class Deconvnet(GradientMethod):
    """The input gradient with ZF's rectification at every activation."""

    method = "deconvnet"
