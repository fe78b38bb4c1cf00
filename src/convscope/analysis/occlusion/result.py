"""OcclusionResult: one image's occlusion maps, as `convscope occlusion` computes them.

Plain data (filled by `convscope.occlusion.occlusion`, drawn by
`convscope.render.occlusion_report`): ZF Fig. 7's panels for one image. In Jupyter it draws itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from torch import Tensor

from convscope.analysis.occlusion.occlusion import Sensitivity


@dataclass
class OcclusionResult:
    """Everything `write_occlusion_report` draws; displays itself in Jupyter."""

    model: str
    image_name: str
    image: npt.NDArray[np.uint8]  # (H, W, 3) as fed
    x: Tensor  # (1, C, H, W)
    classes: list[str]  # class names, index = class
    clean_probs: Tensor  # (K,) the unoccluded image's class probabilities
    grid: Sensitivity  # the (P, Q) maps, the strongest map's projection, meta
    seconds: dict[str, float] = field(default_factory=dict)

    #: set by convscope.render (which this layer may not import): OcclusionResult → HTML
    display: ClassVar[Callable[[OcclusionResult], str] | None] = None

    def _repr_html_(self) -> str | None:
        draw = OcclusionResult.display
        return None if draw is None else draw(self)
