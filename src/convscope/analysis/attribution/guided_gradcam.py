"""Guided Grad-CAM (Selvaraju et al. 2017, §3.1): https://arxiv.org/abs/1610.02391

    GuidedGradCAM(model, layer="layer4").attribute(x, target=3)   # (B, C, H, W), like x

Guided backpropagation times Grad-CAM upsampled to the input's size: fine detail from the
one, class-discriminative location from the other. Upsampling is nearest by default, as
Captum's `GuidedGradCam` (to which it is equal).
"""

from __future__ import annotations

from torch import Tensor, nn

from convscope.analysis.attribution.base import Attribution, AttributionMap, Target
from convscope.analysis.attribution.gradcam import GradCAM, _resize
from convscope.analysis.attribution.guided_backprop import GuidedBackprop


class GuidedGradCAM(Attribution):
    """Guided backprop × upsampled Grad-CAM."""

    method = "guided-gradcam"

    def __init__(self, model: nn.Module, *, layer: str) -> None:
        super().__init__(model)
        self.gradcam = GradCAM(model, layer=layer)
        self.guided = GuidedBackprop(model)

    def attribute(self, x: Tensor, target: Target = None, *, mode: str = "nearest") -> AttributionMap:
        cam, meta = self.gradcam.cam(x, target)
        guided = self.guided.attribute(x, target)
        values = guided.as_subclass(Tensor) * _resize(cam, tuple(x.shape[2:]), mode)  # (B, C, H, W)
        meta.update(method=self.method, rules=guided.meta["rules"], upsample=mode)
        return AttributionMap.wrap(values, meta, x)
