"""convscope: see inside convolutional networks — x, W, z = W*x + b, a = f(z) and their gradients."""

from convscope import render
from convscope.analysis.diagnose import diagnose
from convscope.capture import Block, Probe, Trace, capture, count_hooks
from convscope.config import CaptureConfig

__all__ = ["Block", "CaptureConfig", "Probe", "Trace", "capture", "count_hooks", "diagnose", "render"]
__version__ = "0.1.0"
