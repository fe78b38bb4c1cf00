"""convscope: see inside convolutional networks — x, W, z = W*x + b, a = f(z) and their gradients.

The public names below are imported on first use (convscope/_lazy.py): `import convscope` is
instant, and the first `convscope.X` imports them all (torch included) as one import would. Under
IPython (a notebook) they are imported at once: the Jupyter display of every result is set then.
"""

import importlib as _importlib
import sys as _sys
from typing import TYPE_CHECKING

from convscope._lazy import lazy

if TYPE_CHECKING:  # the names' types, from the module that imports them at run time
    from convscope._api import *  # noqa: F403  (so __all__'s names are star-imported: F405 is off here)

__all__ = [  # noqa: F405
    "Block", "CaptureConfig", "Deconvnet", "GradCAM", "GuidedBackprop", "GuidedGradCAM", "Probe",
    "Saliency", "SmoothGrad", "TopPatches", "Trace", "capture", "count_hooks", "diagnose",
    "receptive_field", "render", "show", "watch",
]  # fmt: skip
__version__ = "0.1.0"
# the same names as _api.__all__ (tests/test_lazy_imports.py): written here so that `import convscope` stays light
lazy(__name__, dict.fromkeys(__all__, "convscope._api"), shadows=frozenset({"capture"}))

if "IPython" in _sys.modules:  # a notebook: all now, so every result draws itself (display hooks), as
    _importlib.import_module("convscope._api")  # `from convscope.capture import Probe` alone did before
