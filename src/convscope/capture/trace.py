"""Trace and Block: what one probed forward pass recorded, block by block.

A block is `conv|linear → (norm) → activation` (DESIGN.md §1), or a lone activation. Its
tensors are detached; a Linear applied to a channels-last (B, H, W, C) tensor is a 1×1 conv
over C, so its x, conv, z, a and their gradients are shown as (B, C, H, W) views and its W as
(C_out, C_in, 1, 1) (`channels_last` says so).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from convscope.capture.naming import LayerSpec


class UnknownLayerError(KeyError):
    """A layer name that the model does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(eq=False)
class Block:
    """One block `conv|linear → (norm) → activation`, or a lone activation, as recorded in one pass.

    Tensors are detached; a field is None when it was not kept or does not apply (no
    gradients under `torch.no_grad()`, no `conv`/`weight` for a lone activation).
    """

    name: str  # the leader's call name, or the activation's for a lone activation
    kind: str  # "conv" | "linear" | "activation"
    spec: LayerSpec | None = None  # the leader's layer spec
    norm_name: str | None = None
    norm_type: str | None = None
    act_name: str | None = None
    activation: str | None = None  # "ReLU", "relu", "tanh", ...
    x: Tensor | None = None  # (B, C_in, H, W) or (B, F_in); channels-last inputs as (B, C_in, H, W) views
    conv: Tensor | None = None  # (B, C_out, H', W'): W*x + b before any norm
    z: Tensor | None = None  # (B, C_out, H', W'): what enters the activation
    a: Tensor | None = None  # (B, C_out, H', W'): activation map = feature map
    _weight: Tensor | None = field(default=None, repr=False)  # (C_out, C_in/groups, k, k) or (F_out, F_in)
    _bias: Tensor | None = field(default=None, repr=False)  # (C_out,)
    grad_weight: Tensor | None = None  # dL/dW, same shape as weight
    grad_bias: Tensor | None = None
    grad_a: Tensor | None = None
    stale: set[str] = field(default_factory=set)  # fields overwritten in place by an unseen op
    channels_last: bool = False  # a Linear over a (B, H, W, C) tensor: recorded as a 1×1 conv over C
    _kept: bool = field(default=False, repr=False)
    _grads: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _z_source: str = field(default="conv", repr=False)  # which recorded tensor is z
    _view_versions: dict[str, int] = field(default_factory=dict, repr=False)

    #: set by convscope.render (capture may not import it): Block → HTML, so it draws itself in Jupyter
    display: ClassVar[Callable[[Block], str] | None] = None

    @classmethod
    def _new(cls, name: str, kind: str, spec: LayerSpec | None, channels_last: bool = False) -> Block:
        """`Block(name=, kind=, spec=, channels_last=)` for the probe, on every block of every pass:
        only these and the three containers are set on the instance; every other field reads its
        class default (the dataclass's) until it is set."""
        block = object.__new__(cls)
        block.name, block.kind, block.spec, block.channels_last = name, kind, spec, channels_last
        block.stale, block._grads, block._view_versions = set(), {}, {}
        return block

    def _repr_html_(self) -> str | None:
        return None if Block.display is None else Block.display(self)

    @property
    def weight(self) -> Tensor | None:
        """W as used in the forward (None, with `stale`, if it was since changed in place)."""
        return self._param_view("weight")

    @weight.setter
    def weight(self, value: Tensor | None) -> None:
        self._weight = value
        self._view_versions.pop("weight", None)

    @property
    def bias(self) -> Tensor | None:
        """b as used in the forward."""
        return self._param_view("bias")

    @bias.setter
    def bias(self, value: Tensor | None) -> None:
        self._bias = value
        self._view_versions.pop("bias", None)

    def _param_view(self, name: str) -> Tensor | None:
        t: Tensor | None = getattr(self, f"_{name}")
        version = self._view_versions.get(name)
        if t is not None and version is not None and t._version != version:
            setattr(self, f"_{name}", None)
            self._view_versions.pop(name)
            self.stale.add(name)
            warnings.warn(
                f"{self.name}.{name} was changed in place after the probe closed (an optimizer step"
                " outside the probe?); run the backward and the step inside the probe to keep it",
                stacklevel=3,
            )
            return None
        return t

    @property
    def grad_z(self) -> Tensor | None:
        """dL/dz."""
        return self._grads.get(self._z_source)

    @property
    def members(self) -> tuple[str, ...]:
        """Names of the calls that make up this block."""
        names = [self.name]
        names += [n for n in (self.norm_name, self.act_name) if n and n != self.name]
        return tuple(names)

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        """Per-example output size (C, H, W) or (F,)."""
        for t in (self.a, self.z, self.conv):
            if t is not None:
                return tuple(t.shape[1:])
        return None


class Trace(Mapping[str, Block]):
    """Blocks of one forward pass, in call order, by block name; member names (the norm's or
    the activation's name) find their block too."""

    def __init__(self) -> None:
        self._blocks: dict[str, Block] = {}
        self._alias: dict[str, str] = {}

    def _add(self, block: Block) -> None:
        self._blocks[block.name] = block

    def _alias_to(self, member: str, block: Block) -> None:
        self._alias[member] = block.name

    def __getitem__(self, name: str) -> Block:
        key = name if name in self._blocks else self._alias.get(name)
        if key is None:
            valid = ", ".join(self._blocks) or "(none: did a forward run inside the probe?)"
            raise UnknownLayerError(f"no block named {name!r} in this trace; blocks: {valid}")
        return self._blocks[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __repr__(self) -> str:
        return f"Trace({list(self._blocks)})"

    #: set by convscope.render (capture may not import it): Trace → HTML (its block table) for Jupyter
    display: ClassVar[Callable[[Trace], str] | None] = None

    def _repr_html_(self) -> str | None:
        return None if Trace.display is None else Trace.display(self)
