"""convscope: see inside convolutional networks — x, W, z = W*x + b, a = f(z) and their gradients."""

from convscope import render
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
__version__ = "0.1.0"
