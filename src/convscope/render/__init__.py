"""convscope.render: tensors -> uint8 pictures that tell the truth (no nn.Module in sight).

    from convscope import render
    render.grid(a)                    # activation maps (B, C, H, W): one labelled cell per channel
    render.filters(conv.weight)       # filters: colour pictures for RGB input, rows otherwise
    render.legend(-1.0, 1.0, signed=True)
    render.overlay(photo, saliency)   # heat over an image
    render.attribution(GuidedBackprop(model).attribute(x, 3))   # a projection, drawn as its paper does
    render.normalize(maps, mode="layer", signed=False)

Importing it also teaches the results of capture and analysis (Trace, Block, Diagnosis,
occlusion grids, attribution maps, ...) to draw themselves in Jupyter (render/notebook.py).

Every function takes torch tensors or numpy arrays and returns a `Picture` (PNG, data URI,
shows itself in Jupyter), except `normalize`, which returns the numbers behind the colours.
"""

from . import diagnose_report, notebook, occlusion_report, projection_report
from .attribution import attribution
from .grid import filters, grid, legend
from .normalize import Normalized, normalize
from .overlay import overlay
from .picture import Box, Picture

__all__ = [
    "Box", "Normalized", "Picture", "attribution", "diagnose_report", "filters", "grid", "legend",
    "normalize", "notebook", "occlusion_report", "overlay", "projection_report",
]  # fmt: skip
