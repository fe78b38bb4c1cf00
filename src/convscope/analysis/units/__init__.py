"""Units: what excites each feature map — receptive fields and top-k dataset patches (ZF Fig. 2)."""

from convscope.analysis.units.receptive_field import (
    ReceptiveField,
    ReceptiveFieldError,
    box,
    receptive_field,
    receptive_fields,
)
from convscope.analysis.units.top_patches import Hit, LayerHits, TopPatches, TopPatchesResult, crops

__all__ = [
    "Hit", "LayerHits", "ReceptiveField", "ReceptiveFieldError", "TopPatches", "TopPatchesResult",
    "box", "crops", "receptive_field", "receptive_fields",
]  # fmt: skip
