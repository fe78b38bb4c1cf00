"""Analysis: numbers and input-space maps computed from a Trace or an image (one technique per file)."""

from convscope.analysis.image_gradient import image_gradient
from convscope.analysis.stats import MapStats, block_stats, map_stats

__all__ = ["MapStats", "block_stats", "image_gradient", "map_stats"]
