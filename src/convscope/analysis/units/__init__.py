"""Units: what excites each feature map — receptive fields and top-k dataset patches (ZF Fig. 2)."""

from convscope.analysis.units.receptive_field import (
    ReceptiveField,
    ReceptiveFieldError,
    box,
    receptive_field,
    receptive_fields,
)

__all__ = ["ReceptiveField", "ReceptiveFieldError", "box", "receptive_field", "receptive_fields"]
