"""The public names of `convscope`, imported together on the first use of any (convscope/__init__.py)."""

import convscope.display  # noqa: F401  (sets the Jupyter display of Block and Trace)
import convscope.render as render
from convscope.analysis import (
    Deconvnet,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    Saliency,
    SmoothGrad,
    TopPatches,
    receptive_field,
)
from convscope.capture import Block, Probe, Trace, capture, count_hooks
from convscope.config import CaptureConfig
from convscope.distributed import diagnose  # split among torchrun ranks when a process group is up
from convscope.notebook import show
from convscope.train.watch import watch

__all__ = [
    "Block", "CaptureConfig", "Deconvnet", "GradCAM", "GuidedBackprop", "GuidedGradCAM", "Probe",
    "Saliency", "SmoothGrad", "TopPatches", "Trace", "capture", "count_hooks", "diagnose",
    "receptive_field", "render", "show", "watch",
]  # fmt: skip
