"""Capture: record every block's x, W*x+b, z, a, W and gradients from any nn.Module."""

from convscope.capture.hooks import HookSet, count_hooks
from convscope.capture.naming import LayerSpec
from convscope.capture.probe import Block, Probe, Trace, UnknownLayerError
from convscope.capture.run import capture, logits_of

__all__ = ["Block", "HookSet", "LayerSpec", "Probe", "Trace", "UnknownLayerError", "capture", "count_hooks", "logits_of"]
