"""What kind of layer a module or a torch function is, and how a recorded call is named.

A block is `conv|linear → (norm) → activation`. Calls are named by the module that made
them (`layer1.0.conv1`); a functional activation is named by the module whose forward
called it plus the function (`layer1.0.relu` for `F.relu` inside `layer1.0`); a second call
of the same name in one forward pass gets `#1`, a third `#2` (a shared `self.relu`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

LEADER_TYPES: tuple[type[nn.Module], ...] = (_ConvNd, nn.Linear)
NORM_TYPES: tuple[type[nn.Module], ...] = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Softplus, nn.LogSigmoid, nn.Softsign,
)  # fmt: skip

#: torch function `__name__`s that are activations, mapped to the name shown for them.
ACTIVATION_FUNCTIONS: dict[str, str] = {
    name: name.rstrip("_")
    for name in (
        "relu", "relu_", "leaky_relu", "leaky_relu_", "relu6", "prelu", "rrelu", "rrelu_",
        "elu", "elu_", "selu", "selu_", "celu", "celu_", "gelu", "silu", "mish",
        "tanh", "tanh_", "sigmoid", "sigmoid_", "hardtanh", "hardtanh_", "hardswish",
        "hardsigmoid", "softplus", "logsigmoid", "softsign",
    )
}  # fmt: skip

#: activations whose output is exactly max(z, 0): a's min and max follow from z's
RELU: frozenset[str] = frozenset({"ReLU", "relu"})
#: activations whose output is never negative: a map is all zero iff its max is 0
NON_NEGATIVE: frozenset[str] = RELU | {"ReLU6", "relu6"}

_CALL_SUFFIX = re.compile(r"#\d+$")


def role(module: nn.Module) -> str | None:
    """'leader' (conv/linear), 'norm', 'activation', or None for anything else."""
    if isinstance(module, LEADER_TYPES):
        return "leader"
    if isinstance(module, NORM_TYPES):
        return "norm"
    if isinstance(module, ACTIVATION_TYPES):
        return "activation"
    return None


def is_inplace(func_name: str, kwargs: dict[str, object]) -> bool:
    """Does this torch function write into its first argument (or an `out=` tensor)?"""
    if kwargs.get("inplace") is True or kwargs.get("out") is not None:
        return True
    if func_name == "__setitem__" or (func_name.startswith("__i") and func_name.endswith("__")):
        return True
    return func_name.endswith("_") and not func_name.endswith("__")


def base_name(name: str) -> str:
    """`layer1.0.relu#1` → `layer1.0.relu`."""
    return _CALL_SUFFIX.sub("", name)


def functional_name(parent: str, func_name: str) -> str:
    """Name of a functional activation called inside module `parent` ('' = the model)."""
    shown = ACTIVATION_FUNCTIONS.get(func_name, func_name)
    return f"{parent}.{shown}" if parent else shown


def selectable_names(model: nn.Module) -> list[str]:
    """Names `Probe(layers=...)` accepts before any forward: conv/linear, norm, activation modules."""
    return [name for name, m in model.named_modules() if name and role(m) is not None]


def is_valid_selection(name: str, model_names: set[str], valid: set[str]) -> bool:
    """A module name from `selectable_names`, or `<any module>.<activation function>`, with an optional `#k`."""
    plain = base_name(name)
    if plain in valid:
        return True
    parent, _, func = plain.rpartition(".")
    return func in ACTIVATION_FUNCTIONS.values() and (parent in model_names)


@dataclass(frozen=True)
class LayerSpec:
    """The numbers ConvNetJS prints beside a layer: type, filter size, stride, parameter count."""

    type: str  # "Conv2d", "Linear", "ReLU", ...
    in_channels: int | None
    out_channels: int | None
    kernel_size: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | str | None
    groups: int
    params: int  # weights + biases of the conv/linear (norm parameters not included)
    formula: str  # e.g. "16 × 3 × 5 × 5 + 16 = 1,216"

    @staticmethod
    def of(module: nn.Module, *, channels_last: bool = False) -> LayerSpec:
        """The spec of a conv or linear module (of any module: its type and parameter count).
        `channels_last`: a Linear applied to (B, H, W, C), described as the 1×1 conv it is."""
        name = type(module).__name__
        if isinstance(module, _ConvNd):
            w_shape = tuple(module.weight.shape)  # (C_out, C_in/groups, k, k)
            has_bias = module.bias is not None
            padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
            return LayerSpec(
                type=name,
                in_channels=module.in_channels,
                out_channels=module.out_channels,
                kernel_size=tuple(module.kernel_size),
                stride=tuple(module.stride),
                padding=padding,
                groups=module.groups,
                params=sum(p.numel() for p in (module.weight, module.bias) if p is not None),
                formula=_formula(w_shape, module.out_channels if has_bias else 0),
            )
        if isinstance(module, nn.Linear) and channels_last:
            has_bias = module.bias is not None
            return LayerSpec(
                type=name,
                in_channels=module.in_features,
                out_channels=module.out_features,
                kernel_size=(1, 1),
                stride=(1, 1),
                padding=(0, 0),
                groups=1,
                params=module.weight.numel() + (module.out_features if has_bias else 0),
                formula=_formula((*module.weight.shape, 1, 1), module.out_features if has_bias else 0),
            )
        if isinstance(module, nn.Linear):
            has_bias = module.bias is not None
            return LayerSpec(
                type=name,
                in_channels=module.in_features,
                out_channels=module.out_features,
                kernel_size=None,
                stride=None,
                padding=None,
                groups=1,
                params=module.weight.numel() + (module.out_features if has_bias else 0),
                formula=_formula(tuple(module.weight.shape), module.out_features if has_bias else 0),
            )
        params = sum(p.numel() for p in module.parameters(recurse=False))
        return LayerSpec(name, None, None, None, None, None, 1, params, f"{params:,}")


def _formula(weight_shape: tuple[int, ...], bias: int) -> str:
    total = math.prod(weight_shape) + bias
    text = " × ".join(str(d) for d in weight_shape)
    if bias:
        text += f" + {bias}"
    return f"{text} = {total:,}"
