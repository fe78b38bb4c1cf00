"""Guided backpropagation (Springenberg et al. 2014, "Striving for simplicity"): https://arxiv.org/abs/1412.6806

    GuidedBackprop(model).attribute(x, target=3)                                  # (B, C, H, W)
    GuidedBackprop(model).attribute(x, layer="conv5", channel=5, position="max")  # one unit, ZF style

At every ReLU the backward passes [z > 0] · max(dL/da, 0): only positive signal, only where
the unit was on. Applied to every activation call, however it is written (`nn.ReLU`,
`F.relu`, `x.relu_()`, one module called twice). For other activations (SiLU, GELU,
hard-swish) the rule is the same idea on their own derivative, f'(z) · max(dL/da, 0), and
`.meta["rules"]` says so.
"""

from __future__ import annotations

from convscope.analysis.attribution.base import GradientMethod


class GuidedBackprop(GradientMethod):
    """The input gradient with the guided rule at every activation."""

    method = "guided"
