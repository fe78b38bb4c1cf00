"""Back to pixels: saliency, SmoothGrad, guided backprop, deconvnet, Grad-CAM, Guided Grad-CAM.

One verb for every method, as Captum: `Method(model, ...).attribute(x, ...)` → an
`AttributionMap` (a tensor shaped like x, or like the layer for Grad-CAM, with `.meta`).
"""

from convscope.analysis.attribution.base import Attribution, AttributionError, AttributionMap
from convscope.analysis.attribution.deconvnet import Deconvnet
from convscope.analysis.attribution.gradcam import GradCAM
from convscope.analysis.attribution.guided_backprop import GuidedBackprop
from convscope.analysis.attribution.guided_gradcam import GuidedGradCAM
from convscope.analysis.attribution.projection import ClassMaps, Projection, Unit
from convscope.analysis.attribution.saliency import Saliency
from convscope.analysis.attribution.smoothgrad import SmoothGrad

#: the methods by the names the CLI, the dashboard and the report use
METHODS: dict[str, type[Attribution]] = {
    "deconvnet": Deconvnet,
    "guided": GuidedBackprop,
    "saliency": Saliency,
    "smoothgrad": SmoothGrad,
    "gradcam": GradCAM,
    "guided-gradcam": GuidedGradCAM,
}

__all__ = [
    "METHODS",
    "Attribution",
    "AttributionError",
    "AttributionMap",
    "ClassMaps",
    "Deconvnet",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "Projection",
    "Saliency",
    "SmoothGrad",
    "Unit",
]
