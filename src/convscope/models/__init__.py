"""convscope.models: the model zoo defined in code, model specs, and safe weights loading.

>>> from convscope.models import load_model, zoo_names
>>> model, entry, metadata = load_model("zoo:tiny-vgg")  # or "my.py:Net", "pkg.mod:factory"

Names are imported on first use (convscope/_lazy.py): `zoo_names` needs no torch.
"""

from typing import TYPE_CHECKING

from convscope._lazy import lazy
from convscope.models.names import zoo_names

if TYPE_CHECKING:
    from convscope.models.load import (
        LoadError,
        SaveError,
        load_model,
        load_weights,
        resolve_model,
        save_weights,
    )
    from convscope.models.zoo import (
        WEIGHTS_DIR,
        ZOO,
        BasicBlock,
        ConvNetJSCifar,
        ConvNetJSMnist,
        ResNet18Shaped,
        TinyVGG,
        UnknownModelError,
        ZFNetSmall,
        ZooEntry,
        get_entry,
    )

_LOAD = ["LoadError", "SaveError", "load_model", "load_weights", "resolve_model", "save_weights"]
__all__ = [  # each name comes from models/load.py if in _LOAD, else zoo.py (zoo_names: names.py)
    "WEIGHTS_DIR", "ZOO", "BasicBlock", "ConvNetJSCifar", "ConvNetJSMnist", "LoadError", "ResNet18Shaped",
    "SaveError", "TinyVGG", "UnknownModelError", "ZFNetSmall", "ZooEntry", "get_entry", "load_model",
    "load_weights", "resolve_model", "save_weights", "zoo_names",
]  # fmt: skip
lazy(__name__, {n: f"convscope.models.{'load' if n in _LOAD else 'zoo'}" for n in __all__ if n != "zoo_names"})
