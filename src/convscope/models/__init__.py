"""convscope.models: the model zoo defined in code, model specs, and safe weights loading.

>>> from convscope.models import load_model, zoo_names
>>> model, entry, metadata = load_model("zoo:tiny-vgg")  # or "my.py:Net", "pkg.mod:factory"
"""

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
    zoo_names,
)

__all__ = [
    "WEIGHTS_DIR",
    "ZOO",
    "BasicBlock",
    "ConvNetJSCifar",
    "ConvNetJSMnist",
    "LoadError",
    "ResNet18Shaped",
    "SaveError",
    "TinyVGG",
    "UnknownModelError",
    "ZFNetSmall",
    "ZooEntry",
    "get_entry",
    "load_model",
    "load_weights",
    "resolve_model",
    "save_weights",
    "zoo_names",
]
