"""What a prediction depends on: occlusion sensitivity (ZF Fig. 7, Captum's Occlusion), exact and incremental.

    Occlusion(model).sensitivity(x, window=16, stride=8, layer="conv5")   # (P, Q) maps
    Occlusion(model).attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=0.5)
"""

from convscope.analysis.occlusion.incremental import Incremental, IncrementalUnsupported
from convscope.analysis.occlusion.occlusion import METHODS, Occlusion, Sensitivity, approx_error
from convscope.analysis.occlusion.result import OcclusionResult

__all__ = ["METHODS", "Incremental", "IncrementalUnsupported", "Occlusion", "OcclusionResult", "Sensitivity", "approx_error"]
