"""Analysis: numbers and input-space maps computed from a Trace or an image (one technique per file)."""

from convscope.analysis.image_gradient import image_gradient
from convscope.analysis.stats import MapStats, map_stats

__all__ = ["MapStats", "image_gradient", "map_stats"]
