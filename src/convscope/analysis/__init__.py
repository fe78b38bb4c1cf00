"""Analysis: numbers and input-space maps computed from a Trace, an image or a dataset stream
(one technique per file): statistics, projections back to pixels (attribution/), what excites
each feature map (units/)."""

from convscope.analysis.attribution import (
    Deconvnet,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    Saliency,
    SmoothGrad,
)
from convscope.analysis.image_gradient import image_gradient
from convscope.analysis.occlusion import Occlusion
from convscope.analysis.stats import MapStats, block_stats, map_stats
from convscope.analysis.units import Hit, TopPatches, TopPatchesResult, receptive_field

__all__ = [
    "Deconvnet",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "Hit",
    "MapStats",
    "Occlusion",
    "Saliency",
    "SmoothGrad",
    "TopPatches",
    "TopPatchesResult",
    "block_stats",
    "image_gradient",
    "map_stats",
    "receptive_field",
]
